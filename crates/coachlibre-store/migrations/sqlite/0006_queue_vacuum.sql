-- PostgreSQL only (vacuum settings of the job queue); SQLite reuses freed pages by itself.
SELECT 1;
