-- run_recovery_install / _uninstall / _config / _version / _debug.
-- The host schema is the spec's protocol_runs table, verbatim.

-- Before install: pure functions work, every other function says how to install.
select run_recovery_version();  -- v0.1.0
select json_extract(run_recovery_debug(), '$.version') = run_recovery_version();  -- 1
select json_extract(run_recovery_debug(), '$.sqlite') = sqlite_version();  -- 1
select json_type(run_recovery_debug(), '$.source');  -- text
select run_recovery_config();  -- error: run_recovery_config: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_recovery_uninstall();  -- error: run_recovery_uninstall: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_heartbeat('a');  -- error: run_heartbeat: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_checkpoint('a', 1);  -- error: run_checkpoint: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select recover_run('a', 'fail');  -- error: recover_run: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select * from orphaned_runs;  -- error: orphaned_runs: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)

-- Install on a database without the table.
select run_recovery_install();  -- error: run_recovery_install: no table 'protocol_runs' in the main database (config key 'table')
select count(*) from sqlite_schema where name like 'run_recovery%';  -- 0

.read sql/protocol_runs.sql

-- Runs present before install: a live run without a heartbeat gets its first
-- stamp (and lease 1); a live run with a heartbeat keeps it as it is (lease 1 is
-- implied when absent); others are untouched.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('live-new', 'new', 'running', '{"app":"kept"}', 'p'),
  ('live-old', 'old', 'paused', '{"lastHeartbeat":1000,"app":1}', 'p'),
  ('queued', 'q', 'queued', NULL, 'p'),
  ('done', 'd', 'completed', '{"x":1}', 'p'),
  ('broken', 'b', 'running', '{oops', 'p');

-- Bad config: refused with the value found; nothing is created.
select run_recovery_install('{"table":"nope"}');  -- error: run_recovery_install: no table 'nope' in the main database (config key 'table')
select run_recovery_install('{"status_column":"state"}');  -- error: run_recovery_install: table 'protocol_runs' has no column 'state' (config key 'status_column')
select run_recovery_install('{"metadata_column":"meta"}');  -- error: run_recovery_install: table 'protocol_runs' has no column 'meta' (config key 'metadata_column')
select run_recovery_install('{"id_column":"id"}');  -- error: run_recovery_install: table 'protocol_runs' has no column 'id' (config key 'id_column')
select run_recovery_install('{"end_time_column":"finished"}');  -- error: run_recovery_install: table 'protocol_runs' has no column 'finished' (config key 'end_time_column')
select run_recovery_install('{"tabel":"x"}');  -- error: run_recovery_install: unknown config key 'tabel', expected one of table, id_column, status_column, metadata_column, name_column, end_time_column, updated_at_column, stale_after_ms, live_statuses, max_resumes, schema
select run_recovery_install('[1]');  -- error: run_recovery_install: config must be a JSON object, found '[1]'
select run_recovery_install('{nope');  -- error: run_recovery_install: config is not valid JSON (key must be a string at line 1 column 2), found '{nope'
select run_recovery_install(x'7b7d');  -- error: run_recovery_install: config must be JSON text, found a blob of 2 bytes
select run_recovery_install(3);  -- error: run_recovery_install: config must be JSON text, found 3
select run_recovery_install('{"stale_after_ms":0}');  -- error: run_recovery_install: config key 'stale_after_ms' must be an integer >= 1, found 0
select run_recovery_install('{"stale_after_ms":1.5}');  -- error: run_recovery_install: config key 'stale_after_ms' must be an integer >= 1, found 1.5
select run_recovery_install('{"max_resumes":-1}');  -- error: run_recovery_install: config key 'max_resumes' must be an integer >= 0, found -1
select run_recovery_install('{"live_statuses":["failed"]}');  -- error: run_recovery_install: config key 'live_statuses' cannot contain the terminal status 'failed', found ["failed"]
select run_recovery_install('{"live_statuses":[]}');  -- error: run_recovery_install: config key 'live_statuses' must be a non-empty array of status names, found []
select run_recovery_install('{"schema":"temp"}');  -- error: run_recovery_install: only the 'main' schema is supported, found schema "temp"
-- A hostile table name is only ever a quoted identifier: refused here (no such table), never executed.
select run_recovery_install('{"table":"x\"; DROP TABLE protocol_runs; --"}');  -- error: run_recovery_install: no table 'x"; DROP TABLE protocol_runs; --' in the main database (config key 'table')
select count(*) from sqlite_schema where name = 'protocol_runs' or name like 'run_recovery%';  -- 1

-- Install: returns the effective config; NULL config means the defaults.
select run_recovery_install(NULL);  -- {"table":"protocol_runs","id_column":"accession_id","status_column":"status","metadata_column":"properties_json","name_column":"name","end_time_column":"end_time","updated_at_column":"updated_at","stale_after_ms":30000,"live_statuses":["preparing","running","pausing","paused","resuming","canceling","intervening","requires_intervention"],"max_resumes":3}
select run_recovery_config() = run_recovery_install();  -- 1
select type, name from sqlite_schema where name like 'run_recovery%' order by name;  -- trigger|run_recovery_act_checkpoint
                                                                                    -- trigger|run_recovery_act_dismiss
                                                                                    -- trigger|run_recovery_act_fail
                                                                                    -- trigger|run_recovery_act_heartbeat
                                                                                    -- trigger|run_recovery_act_resume
                                                                                    -- trigger|run_recovery_act_unknown
                                                                                    -- view|run_recovery_actions
                                                                                    -- view|run_recovery_guard_check
                                                                                    -- trigger|run_recovery_guard_check_do
                                                                                    -- view|run_recovery_guard_repair
                                                                                    -- trigger|run_recovery_guard_repair_do
                                                                                    -- trigger|run_recovery_lease_guard
                                                                                    -- view|run_recovery_orphans
                                                                                    -- trigger|run_recovery_replace_guard
                                                                                    -- trigger|run_recovery_replace_keep
                                                                                    -- table|run_recovery_replaced
                                                                                    -- view|run_recovery_runs
                                                                                    -- table|run_recovery_settings
                                                                                    -- view|run_recovery_stamp
                                                                                    -- trigger|run_recovery_stamp_do
                                                                                    -- trigger|run_recovery_stamp_insert
                                                                                    -- trigger|run_recovery_stamp_live
select key from run_recovery_settings order by key;  -- config
                                                     -- schema_version
select value from run_recovery_settings where key = 'schema_version';  -- 8

-- What install stamped.
select accession_id, json_extract(properties_json, '$.lastHeartbeat') > 1700000000000, properties_json ->> '$.lease', properties_json ->> '$.app'
  from protocol_runs where accession_id = 'live-new';  -- live-new|1|1|kept
select properties_json from protocol_runs where accession_id = 'live-old';  -- {"lastHeartbeat":1000,"app":1}
select accession_id, properties_json from protocol_runs where accession_id in ('queued', 'done', 'broken') order by 1;  -- broken|{oops
                                                                                                                      -- done|{"x":1}
                                                                                                                      -- queued|NULL

-- Re-install is idempotent: same objects, same config, heartbeats kept.
create temp table before as select accession_id, properties_json from protocol_runs;
select run_recovery_install() = run_recovery_config();  -- 1
select count(*) from sqlite_schema where name like 'run_recovery%';  -- 22
select count(*) from protocol_runs join temp.before b using (accession_id) where protocol_runs.properties_json is b.properties_json;  -- 5

-- Keys given to a later install override the stored config; the others are kept.
select run_recovery_install('{"stale_after_ms":5000}') ->> '$.stale_after_ms';  -- 5000
select run_recovery_install() ->> '$.stale_after_ms', run_recovery_config() ->> '$.max_resumes';  -- 5000|3
select sql like '% - (5000)%' from sqlite_schema where name = 'run_recovery_orphans';  -- 1
-- live_statuses are stored lowercase, deduplicated.
select run_recovery_install('{"live_statuses":["Running","RUNNING","paused"],"max_resumes":0}') ->> '$.live_statuses';  -- ["running","paused"]
select run_recovery_install('{"stale_after_ms":30000,"live_statuses":["preparing","running","pausing","paused","resuming","canceling","intervening","requires_intervention"],"max_resumes":3}') = run_recovery_config();  -- 1
-- A refused install changes nothing.
select run_recovery_install('{"max_resumes":7,"table":"nope"}');  -- error: run_recovery_install: no table 'nope' in the main database (config key 'table')
select run_recovery_config() ->> '$.max_resumes';  -- 3

-- Functions that write are DIRECTONLY: a view or trigger cannot call them.
create view sneaky as select run_heartbeat('live-new');
select * from sneaky;  -- error: unsafe use of run_heartbeat()
create view sneaky2 as select recover_run('live-old', 'fail');
select * from sneaky2;  -- error: unsafe use of recover_run()
create view sneaky3 as select run_recovery_uninstall();
select * from sneaky3;  -- error: unsafe use of run_recovery_uninstall()
drop view sneaky; drop view sneaky2; drop view sneaky3;

-- Uninstall: drops every object install made; run data untouched.
select run_recovery_uninstall();  -- {"uninstalled":true,"table":"protocol_runs"}
select count(*) from sqlite_schema where name like 'run_recovery%';  -- 0
select count(*) from protocol_runs join temp.before b using (accession_id) where protocol_runs.properties_json is b.properties_json;  -- 5
select run_recovery_config();  -- error: run_recovery_config: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_recovery_uninstall();  -- error: run_recovery_uninstall: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
-- After uninstall, a plain write is plain again (no trigger stamps it).
update protocol_runs set status = 'running' where accession_id = 'queued';
select properties_json from protocol_runs where accession_id = 'queued';  -- NULL
-- Install again after uninstall starts from the defaults.
select run_recovery_install() ->> '$.stale_after_ms';  -- 30000
select properties_json ->> '$.lease' from protocol_runs where accession_id = 'queued';  -- 1
