//! TODO(issue 3): blackhole
