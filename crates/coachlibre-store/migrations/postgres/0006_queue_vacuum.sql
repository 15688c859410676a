-- The job queue updates every row two or three times in a few milliseconds: vacuum it early
-- so that claims do not wade through dead row versions, and leave room in each page for
-- updated versions.
ALTER TABLE jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
