//! TODO(issue 4): codec
