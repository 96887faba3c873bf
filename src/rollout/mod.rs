//! The rolling planner for MaintenanceWindow (pure).
