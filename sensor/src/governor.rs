//! TODO(issue 2): pressure governor
