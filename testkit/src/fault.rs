//! Fault-injecting compilers and backends.
