//! TODO(issue 3): ftp
