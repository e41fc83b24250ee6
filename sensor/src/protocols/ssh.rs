//! TODO(issue 3): ssh
