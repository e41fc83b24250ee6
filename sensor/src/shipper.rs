//! TODO(issue 4): shipper
