//! TODO(issue 4): frame
