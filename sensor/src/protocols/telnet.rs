//! TODO(issue 3): telnet
