//! TODO(issue 3): smb
