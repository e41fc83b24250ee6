//! TODO(issue 3): listeners
