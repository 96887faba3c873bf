//! `nmo simulate`: seeding, scenario running and progress display.
