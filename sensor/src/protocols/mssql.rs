//! TODO(issue 3): mssql
