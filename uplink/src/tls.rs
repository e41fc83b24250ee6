//! TODO(issue 4): tls
