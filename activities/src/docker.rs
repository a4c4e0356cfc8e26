//! Docker through bollard (see docs/ARCHITECTURE.md).
