//! TODO(issue 2): store
