//! Schedules: CronJob-exact cron, IANA time zones, Go durations and window maths (pure).
