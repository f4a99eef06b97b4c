-- Upgrade in place: tests/fixtures/schema-v1.db was made by the release whose
-- install writes schema_version 1 (triggers and the orphans view, no actions;
-- see tests/fixtures/schema-v1.sql). Opened as an in-memory copy, so the
-- fixture itself never changes.

-- 1. With the extension: run_recovery_install() upgrades, keeps the config, changes no run.
.open --deserialize tests/fixtures/schema-v1.db
.load dist/run_recovery
select value from run_recovery_settings where key = 'schema_version';  -- 1
select count(*) from sqlite_schema where name in ('run_recovery_actions', 'run_recovery_runs');  -- 0
create temp table v1 as select * from protocol_runs;
select count(*) from temp.v1;  -- 8
select run_recovery_install() = (select value from run_recovery_settings where key = 'config');  -- 1
select value from run_recovery_settings where key = 'schema_version';  -- 8
select count(*) from sqlite_schema where name in ('run_recovery_actions', 'run_recovery_runs', 'run_recovery_act_heartbeat');  -- 3
select count(*) from sqlite_schema where name = 'run_recovery_merge_back';  -- 0
select count(*) from protocol_runs p join temp.v1 o using (accession_id)
 where p.properties_json is o.properties_json and p.status is o.status and p.end_time is o.end_time
   and p.updated_at is o.updated_at and p.name is o.name;  -- 8
-- The runs recovered under v1 read back through the new view.
select run_id, status, live, lease, resumes, checkpoint_step, dismissed from run_recovery_runs order by run_id;  -- R-UPPER|RUNNING|1|1|0|3|0
                                                                                                           -- r-bad|running|1|1|0|NULL|0
                                                                                                           -- r-dismissed|paused|1|1|0|NULL|1
                                                                                                           -- r-done|completed|0|1|0|NULL|0
                                                                                                           -- r-failed|Failed|0|2|0|NULL|0
                                                                                                           -- r-lower|running|1|1|0|NULL|0
                                                                                                           -- r-queued|queued|0|1|0|NULL|0
                                                                                                           -- r-resumed|running|1|2|1|2|0
-- And the actions work on them (the v1 log is extended, not replaced).
insert into run_recovery_actions (run_id, action) values ('r-resumed', 'resume');
select lease, resumes from run_recovery_runs where run_id = 'r-resumed';  -- 3|2
select json_array_length(properties_json, '$.recoveryLog') from protocol_runs where accession_id = 'r-resumed';  -- 2
insert into run_recovery_actions (run_id, action) values ('r-failed', 'fail');  -- error: run_recovery_actions: fail: run was already recovered by another client since its last heartbeat (19)
insert into run_recovery_actions (run_id, action, lease) values ('R-UPPER', 'heartbeat', 1);
select run_heartbeat('r-lower', 1) > 0;  -- 1

-- 2. Without the extension: applying the new sql/install.sql upgrades as well.
.open --deserialize tests/fixtures/schema-v1.db
create temp table v1 as select * from protocol_runs;
.read sql/install.sql
select value from run_recovery_settings where key = 'schema_version';  -- 8
select count(*) from sqlite_schema where name in ('run_recovery_actions', 'run_recovery_runs', 'run_recovery_act_heartbeat');  -- 3
select count(*) from sqlite_schema where name = 'run_recovery_merge_back';  -- 0
select count(*) from protocol_runs p join temp.v1 o using (accession_id)
 where p.properties_json is o.properties_json and p.status is o.status and p.end_time is o.end_time
   and p.updated_at is o.updated_at and p.name is o.name;  -- 8
insert into run_recovery_actions (run_id, action, threshold_ms) values ('R-UPPER', 'fail', 1000);
select r.status, lease, end_time is not null from run_recovery_runs r join protocol_runs on accession_id = run_id where run_id = 'R-UPPER';  -- FAILED|2|1

-- 3. From schema_version 5, whose one trigger run_recovery_act did every
-- action: the shape is made here by hand (the view with that one trigger,
-- refusing everything so any use of it shows). Install drops it with its view.
drop trigger run_recovery_act_heartbeat;
drop trigger run_recovery_act_checkpoint;
drop trigger run_recovery_act_resume;
drop trigger run_recovery_act_fail;
drop trigger run_recovery_act_dismiss;
drop trigger run_recovery_act_unknown;
create trigger run_recovery_act instead of insert on run_recovery_actions begin select raise(abort, 'schema 5 trigger'); end;
update run_recovery_settings set value = '5' where key = 'schema_version';
insert into run_recovery_actions (run_id, action, lease) values ('r-lower', 'heartbeat', 1);  -- error: schema 5 trigger (19)
.read sql/install.sql
select value from run_recovery_settings where key = 'schema_version';  -- 8
select group_concat(name, ' ') from (select name from sqlite_schema where name like 'run_recovery_act%' and type = 'trigger' order by name);  -- run_recovery_act_checkpoint run_recovery_act_dismiss run_recovery_act_fail run_recovery_act_heartbeat run_recovery_act_resume run_recovery_act_unknown
insert into run_recovery_actions (run_id, action, lease) values ('r-lower', 'heartbeat', 1);
select count(*) from run_recovery_runs where run_id = 'r-lower' and age_ms < 60000;  -- 1

-- 4. From schema_version 6 (tests/fixtures/schema-v6.db, made by that release:
-- see tests/fixtures/schema-v6.sql): REPLACE was not guarded and JSON null
-- counted as a value. install upgrades in place and changes no run.
.open --deserialize tests/fixtures/schema-v6.db
.load dist/run_recovery
create temp table v6 as select * from protocol_runs;
select value from run_recovery_settings where key = 'schema_version';  -- 6
select run_recovery_install() ->> '$.max_resumes';  -- 3
select value from run_recovery_settings where key = 'schema_version';  -- 8
select count(*) from protocol_runs p join temp.v6 o using (accession_id)
 where p.properties_json is o.properties_json and p.status is o.status and p.name is o.name;  -- 4
select count(*) from sqlite_schema where name in ('run_recovery_replaced', 'run_recovery_replace_keep', 'run_recovery_replace_guard');  -- 3
-- The rules of schema 7 and later hold on the runs written under 6.
replace into protocol_runs (accession_id, status, properties_json, top_level_protocol_definition_accession_id) values ('v6-resumed', 'running', '{"app":2}', 'p');
select properties_json ->> '$.app', properties_json ->> '$.lease', properties_json ->> '$.resumes', properties_json ->> '$.checkpointStep' from protocol_runs where accession_id = 'v6-resumed';  -- 2|2|1|4
update protocol_runs set properties_json = json_set(properties_json, '$.lease', null) where accession_id = 'v6-resumed';
select properties_json ->> '$.lease' from protocol_runs where accession_id = 'v6-resumed';  -- 2
insert into run_recovery_actions (run_id, action, lease, step, state) values ('v6-running', 'checkpoint', 1, 3, '{"tips":4}');
select properties_json ->> '$.checkpointRev', properties_json ->> '$.big' = '123456789012345678901234567890' or instr(properties_json, '123456789012345678901234567890') > 0, instr(properties_json, '1.50') > 0 from protocol_runs where accession_id = 'v6-running';  -- 1|1|1

-- 5. From schema_version 7 (tests/fixtures/schema-v7.db, made by that release:
-- see tests/fixtures/schema-v7.sql): the lease guard read the heartbeat on
-- its own for every write. install upgrades in place and changes no run.
.open --deserialize tests/fixtures/schema-v7.db
.load dist/run_recovery
create temp table v7 as select * from protocol_runs;
select value from run_recovery_settings where key = 'schema_version';  -- 7
select instr(sql, 'THEN 1') > 0 from sqlite_schema where name = 'run_recovery_lease_guard';  -- 0
select run_recovery_install() ->> '$.max_resumes';  -- 3
select value from run_recovery_settings where key = 'schema_version';  -- 8
select instr(sql, 'NOT json_valid(NEW.`properties_json`)') > 0 from sqlite_schema where name = 'run_recovery_lease_guard';  -- 1
select count(*) from protocol_runs p join temp.v7 o using (accession_id)
 where p.properties_json is o.properties_json and p.status is o.status and p.name is o.name;  -- 4
-- The guard holds on the runs written under 7: an app's read-modify-write of
-- a fresh copy is kept, a stale copy's lease is refused, its checkpoint
-- and heartbeat never move back.
update protocol_runs set properties_json = json_set(properties_json, '$.operator', 'bo') where accession_id = 'v7-running';
select properties_json ->> '$.operator', properties_json ->> '$.checkpointStep' from protocol_runs where accession_id = 'v7-running';  -- bo|2
update protocol_runs set properties_json = (select properties_json from temp.v7 where accession_id = 'v7-resumed') where accession_id = 'v7-resumed';
select properties_json ->> '$.lease', properties_json ->> '$.resumes', properties_json ->> '$.checkpointState' from protocol_runs where accession_id = 'v7-resumed';  -- 2|1|plate 4
update protocol_runs set properties_json = json_set(properties_json, '$.lease', 1) where accession_id = 'v7-resumed';  -- error: run_recovery_lease_guard: stale write refused: the metadata carries an older lease than the run holds (the run was recovered by another client) (19)
select run_heartbeat('v7-resumed', 2) > 1700000000000;  -- 1
update protocol_runs set properties_json = (select properties_json from temp.v7 where accession_id = 'v7-resumed') where accession_id = 'v7-resumed';
select properties_json ->> '$.lastHeartbeat' >= (select properties_json ->> '$.lastHeartbeat' from temp.v7 where accession_id = 'v7-resumed') from protocol_runs where accession_id = 'v7-resumed';  -- 1
