//! TODO(issue 3): mysql
