//! TODO(issue 3): http
