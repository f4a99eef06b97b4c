-- sqltest: without-extension
-- The pure-SQL layer, as a client that never loads the extension gets it
-- (the browser app on SQLite WASM, a stock Python): sql/install.sql is the
-- default install's SQL, applied with the plain shell.

.read sql/protocol_runs.sql
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('before', 'b', 'running', NULL, 'p'),
  ('seeded', 's', 'paused', '{"lastHeartbeat":1000}', 'p');
.read sql/install.sql

-- The extension is not here.
select run_heartbeat('before');  -- error: no such function: run_heartbeat
select count(*) from sqlite_schema where name like 'run_recovery%';  -- 22

-- Install stamped the live run that had no heartbeat, and kept the seeded one.
select properties_json ->> '$.lastHeartbeat' > 1700000000000, properties_json ->> '$.lease' from protocol_runs where accession_id = 'before';  -- 1|1
select properties_json from protocol_runs where accession_id = 'seeded';  -- {"lastHeartbeat":1000}

-- Stamp on insert into a live status (any case); not for queued or pending.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('ins', 'i', 'running', '{"app":"kept"}', 'p'),
  ('INS', 'I', 'PREPARING', NULL, 'p'),
  ('q', 'q', 'queued', '{"app":2}', 'p'),
  ('pend', 'p', 'PENDING', NULL, 'p'),
  ('arr', 'a', 'running', '[1,2]', 'p'),
  ('bad', 'b', 'running', '{oops', 'p');
select accession_id, properties_json ->> '$.lastHeartbeat' > 1700000000000, properties_json ->> '$.lease', properties_json ->> '$.app'
  from protocol_runs where accession_id in ('ins', 'INS') order by 1;  -- INS|1|1|NULL
                                                                       -- ins|1|1|kept
select accession_id, properties_json from protocol_runs where accession_id in ('q', 'pend', 'arr', 'bad') order by 1;  -- arr|[1,2]
                                                                                                                     -- bad|{oops
                                                                                                                     -- pend|NULL
                                                                                                                     -- q|{"app":2}

-- Stamp on every transition into a live status ...
update protocol_runs set status = 'pending' where accession_id = 'q';
select properties_json from protocol_runs where accession_id = 'q';  -- {"app":2}
update protocol_runs set status = 'Preparing' where accession_id = 'q';
select properties_json ->> '$.lastHeartbeat' > 1700000000000, properties_json ->> '$.app' from protocol_runs where accession_id = 'q';  -- 1|2
-- ... and never backwards: a seeded heartbeat ahead of the clock is kept.
update protocol_runs set status = 'completed', properties_json = '{"lastHeartbeat":4102444800000}' where accession_id = 'pend';
update protocol_runs set status = 'running' where accession_id = 'pend';
select properties_json from protocol_runs where accession_id = 'pend';  -- {"lease":1,"lastHeartbeat":4102444800000}
-- A move between two live statuses is not a transition into one: no stamp.
update protocol_runs set status = 'running' where accession_id = 'seeded';
select properties_json from protocol_runs where accession_id = 'seeded';  -- {"lastHeartbeat":1000}

-- The view lists orphans at the configured threshold (30000 ms); 'arr' and 'bad' have no
-- readable heartbeat, so they are listed as never seen; 'pend' holds one
-- more than the threshold ahead of the clock (a clock that was wrong), so it
-- is listed too (age_ms negative) until its executor stamps again.
select group_concat(run_id) from (select run_id from run_recovery_orphans order by age_ms desc, run_id);  -- arr,bad,seeded,pend
select run_id, name, status, last_heartbeat, age_ms > 1700000000000, lease, resumes, dismissed from run_recovery_orphans where run_id = 'seeded';  -- seeded|s|running|1000|1|1|0|0

-- Lease guard: a metadata write carrying an older lease than the row holds is refused.
update protocol_runs set properties_json = json_set(properties_json, '$.lease', 3) where accession_id = 'ins';
update protocol_runs set properties_json = json_set(properties_json, '$.lease', 2, '$.app', 'stale') where accession_id = 'ins';  -- error: run_recovery_lease_guard: stale write refused: the metadata carries an older lease than the run holds (the run was recovered by another client) (19)
select properties_json ->> '$.lease', properties_json ->> '$.app' from protocol_runs where accession_id = 'ins';  -- 3|kept
-- The same or a newer lease is fine.
update protocol_runs set properties_json = json_set(properties_json, '$.app', 'same lease') where accession_id = 'ins';
update protocol_runs set properties_json = json_set(properties_json, '$.lease', 4) where accession_id = 'ins';
select properties_json ->> '$.lease', properties_json ->> '$.app' from protocol_runs where accession_id = 'ins';  -- 4|same lease

-- Merge-back: a plain write that drops the recovery keys gets them back.
update protocol_runs set properties_json = '{"lastHeartbeat":5000,"checkpointStep":3,"checkpointState":{"w":1},"resumes":2,"dismissedHeartbeat":5000,"recoveryLog":[{"action":"resume"}],"lease":4}' where accession_id = 'ins';
update protocol_runs set properties_json = '{"app":"rewritten"}' where accession_id = 'ins';
-- (The heartbeat is the larger of the two: the stamp of the write before moved it to now.)
select json_remove(properties_json, '$.lastHeartbeat'), properties_json ->> '$.lastHeartbeat' > 1700000000000 from protocol_runs where accession_id = 'ins';  -- {"app":"rewritten","lease":4,"resumes":2,"checkpointStep":3,"checkpointState":{"w":1},"dismissedHeartbeat":5000,"recoveryLog":[{"action":"resume"}]}|1
-- A checkpoint, resume count or log that a stale write would move backwards is kept.
update protocol_runs set properties_json = json_set(properties_json, '$.checkpointStep', 1, '$.checkpointState', '"old"', '$.resumes', 0, '$.recoveryLog', json('[]')) where accession_id = 'ins';
select properties_json ->> '$.checkpointStep', properties_json -> '$.checkpointState', properties_json ->> '$.resumes', json_array_length(properties_json, '$.recoveryLog') from protocol_runs where accession_id = 'ins';  -- 3|{"w":1}|2|1
-- Forward moves are plain writes.
update protocol_runs set properties_json = json_set(properties_json, '$.checkpointStep', 4, '$.checkpointState', json('{"w":2}')) where accession_id = 'ins';
select properties_json ->> '$.checkpointStep', properties_json -> '$.checkpointState' from protocol_runs where accession_id = 'ins';  -- 4|{"w":2}
-- lastHeartbeat never moves back (a stale copy written back would make a live run
-- look dead), unless the settings allow it on purpose (tests and demos age runs so).
create temp table hb as select properties_json ->> '$.lastHeartbeat' as v from protocol_runs where accession_id = 'ins';
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', 10) where accession_id = 'ins';
select properties_json ->> '$.lastHeartbeat' = (select v from temp.hb) from protocol_runs where accession_id = 'ins';  -- 1
insert into run_recovery_settings (key, value) values ('allow_backdating', '1');
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', 10) where accession_id = 'ins';
select properties_json ->> '$.lastHeartbeat' from protocol_runs where accession_id = 'ins';  -- 10
-- Text that is not a JSON object over recovery state would lose it: refused.
update protocol_runs set properties_json = 'garbage' where accession_id = 'ins';  -- error: run_recovery_lease_guard: write refused: the new metadata is not a JSON object (malformed text, an array, a scalar or JSON5) and the run holds recovery state that it would lose; write a JSON object (json() turns JSON5 into JSON) (19)
select properties_json ->> '$.lease' from protocol_runs where accession_id = 'ins';  -- 4
-- Metadata that is not an object is the app's business: the triggers leave it alone.
update protocol_runs set properties_json = '{"lease":1}' where accession_id = 'arr';
select properties_json from protocol_runs where accession_id = 'arr';  -- {"lease":1}

-- A write in a transaction that is rolled back leaves nothing behind.
begin;
insert into protocol_runs (accession_id, status, top_level_protocol_definition_accession_id) values ('tx', 'running', 'p');
update protocol_runs set status = 'running' where accession_id = 'bad';
rollback;
select count(*) from protocol_runs where accession_id = 'tx';  -- 0

-- Uninstalling by hand (what run_recovery_uninstall does) leaves run data as it is.
create temp table snap as select accession_id, status, properties_json from protocol_runs;
drop trigger run_recovery_stamp_insert; drop trigger run_recovery_stamp_live; drop trigger run_recovery_lease_guard; drop view run_recovery_orphans; drop view run_recovery_actions; drop view run_recovery_runs; drop table run_recovery_settings;
select count(*) from protocol_runs p join temp.snap s using (accession_id) where p.status is s.status and p.properties_json is s.properties_json;  -- 8
