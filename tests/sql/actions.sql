-- sqltest: without-extension
-- Every recovery action in pure SQL: INSERT INTO run_recovery_actions, read
-- the outcome from run_recovery_runs. No extension is loaded here: this is
-- what the browser app on SQLite WASM, a stock Python or a dqlite node gets
-- from sql/install.sql alone.

.read sql/protocol_runs.sql
.read sql/install.sql
-- This file ages runs with plain writes of lastHeartbeat: allowed on purpose here.
insert into run_recovery_settings (key, value) values ('allow_backdating', '1');
select run_heartbeat('x');  -- error: no such function: run_heartbeat
select group_concat(name, ',') from pragma_table_info('run_recovery_actions');  -- run_id,action,lease,step,state,threshold_ms
select group_concat(name, ',') from pragma_table_info('run_recovery_runs');  -- run_id,name,status,live,last_heartbeat,age_ms,checkpoint_step,checkpoint_state,lease,resumes,dismissed
select count(*) from run_recovery_actions;  -- 0

-- A run goes live (UPPERCASE database): the trigger stamps lease 1.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('r1', 'ELISA plate 1', 'RUNNING', '{"operator":"ana"}', 'proto'),
  ('q1', 'Queued run', 'QUEUED', NULL, 'proto'),
  ('arr', 'Array metadata', 'RUNNING', '[1,2]', 'proto'),
  ('bad', 'Broken metadata', 'RUNNING', '{oops', 'proto');
select run_id, name, status, live, last_heartbeat > 1700000000000, age_ms between 0 and 5000, lease, resumes, dismissed from run_recovery_runs where run_id = 'r1';  -- r1|ELISA plate 1|RUNNING|1|1|1|1|0|0
select run_id, live, last_heartbeat, age_ms, lease from run_recovery_runs where run_id = 'q1';  -- q1|0|NULL|NULL|1

-- heartbeat: fenced with the lease; the app's keys are kept.
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 1);
insert into run_recovery_actions (run_id, action) values ('r1', 'heartbeat');
select properties_json ->> '$.operator', properties_json ->> '$.lease' from protocol_runs where accession_id = 'r1';  -- ana|1
-- A heartbeat never moves backwards: one ahead of this clock (another
-- host's) is kept, unless it is more than stale_after_ms ahead (a clock that
-- was wrong): the executor's stamp then writes its own clock.
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 20000) where accession_id = 'r1';
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 1);
select age_ms < -10000 from run_recovery_runs where run_id = 'r1';  -- 1
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', 4102444800000) where accession_id = 'r1';
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 1);
select last_heartbeat < 4102444800000, age_ms between 0 and 60000 from run_recovery_runs where run_id = 'r1';  -- 1|1
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', 1000) where accession_id = 'r1';
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 1);
select last_heartbeat > 1700000000000 from run_recovery_runs where run_id = 'r1';  -- 1

-- checkpoint: step and state with a heartbeat, in one statement; never backwards.
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 1, 2, '{"plate":"P1", "next_well":"C4"}');
select checkpoint_step, checkpoint_state from run_recovery_runs where run_id = 'r1';  -- 2|{"plate":"P1","next_well":"C4"}
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 1, 1, '{}');  -- error: run_recovery_actions: checkpoint: step is behind the committed checkpoint (19)
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 1, 2, 7);
insert into run_recovery_actions (run_id, action, lease, step) values ('r1', 'checkpoint', 1, 3);
select checkpoint_step, checkpoint_state, properties_json ->> '$.checkpointState' is null from run_recovery_runs join protocol_runs on accession_id = run_id where run_id = 'r1';  -- 3|null|1
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 1, 3, 7.5);
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 1, 3, json_quote('plate 3'));
select checkpoint_state from run_recovery_runs where run_id = 'r1';  -- "plate 3"

-- Bad arguments are refused by name; nothing changes.
create temp table snap as select * from protocol_runs;
insert into run_recovery_actions (run_id, action) values ('r1', 'explode');  -- error: run_recovery_actions: unknown action: expected one of 'heartbeat', 'checkpoint', 'resume', 'fail', 'dismiss' (19)
insert into run_recovery_actions (run_id, action) values ('r1', NULL);  -- error: run_recovery_actions: unknown action: expected one of 'heartbeat', 'checkpoint', 'resume', 'fail', 'dismiss' (19)
insert into run_recovery_actions (run_id) values ('r1');  -- error: run_recovery_actions: unknown action: expected one of 'heartbeat', 'checkpoint', 'resume', 'fail', 'dismiss' (19)
insert into run_recovery_actions (run_id, action) values (NULL, 'heartbeat');  -- error: run_recovery_actions: heartbeat: run_id must be text or an integer (19)
insert into run_recovery_actions (run_id, action) values (1.5, 'resume');  -- error: run_recovery_actions: resume: run_id must be text or an integer (19)
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 0);  -- error: run_recovery_actions: heartbeat: lease must be an integer >= 1 (or NULL for no fencing) (19)
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', '1');  -- error: run_recovery_actions: heartbeat: lease must be an integer >= 1 (or NULL for no fencing) (19)
insert into run_recovery_actions (run_id, action, lease, step) values ('r1', 'checkpoint', 1.0, 4);  -- error: run_recovery_actions: checkpoint: lease must be an integer >= 1 (or NULL for no fencing) (19)
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'checkpoint', 1);  -- error: run_recovery_actions: checkpoint: step must be an integer >= 0 (missing or negative) (19)
insert into run_recovery_actions (run_id, action, step) values ('r1', 'checkpoint', -1);  -- error: run_recovery_actions: checkpoint: step must be an integer >= 0 (missing or negative) (19)
insert into run_recovery_actions (run_id, action, step) values ('r1', 'checkpoint', '4');  -- error: run_recovery_actions: checkpoint: step must be an integer >= 0 (missing or negative) (19)
insert into run_recovery_actions (run_id, action, step, state) values ('r1', 'checkpoint', 4, 'plate 4');  -- error: run_recovery_actions: checkpoint: state must be valid JSON text, a number or NULL (wrap a plain string in json_quote()) (19)
insert into run_recovery_actions (run_id, action, step, state) values ('r1', 'checkpoint', 4, x'7b7d');  -- error: run_recovery_actions: checkpoint: state must be valid JSON text, a number or NULL (wrap a plain string in json_quote()) (19)
insert into run_recovery_actions (run_id, action, threshold_ms) values ('r1', 'fail', -1);  -- error: run_recovery_actions: fail: threshold_ms must be an integer >= 0 (or NULL for the installed stale_after_ms) (19)
insert into run_recovery_actions (run_id, action, threshold_ms) values ('r1', 'dismiss', '100');  -- error: run_recovery_actions: dismiss: threshold_ms must be an integer >= 0 (or NULL for the installed stale_after_ms) (19)
-- The row's preconditions, in the order the functions check them.
insert into run_recovery_actions (run_id, action) values ('nope', 'heartbeat');  -- error: run_recovery_actions: heartbeat: no such run (19)
insert into run_recovery_actions (run_id, action, step) values ('nope', 'checkpoint', 1);  -- error: run_recovery_actions: checkpoint: no such run (19)
insert into run_recovery_actions (run_id, action) values ('nope', 'resume');  -- error: run_recovery_actions: resume: no such run (19)
insert into run_recovery_actions (run_id, action) values ('nope', 'fail');  -- error: run_recovery_actions: fail: no such run (19)
insert into run_recovery_actions (run_id, action) values ('nope', 'dismiss');  -- error: run_recovery_actions: dismiss: no such run (19)
insert into run_recovery_actions (run_id, action) values ('q1', 'heartbeat');  -- error: run_recovery_actions: heartbeat: run is not live: only a run in a live status has an executor (19)
insert into run_recovery_actions (run_id, action, threshold_ms) values ('q1', 'resume', 0);  -- error: run_recovery_actions: resume: run is not live: only a run in a live status has an executor (19)
insert into run_recovery_actions (run_id, action) values ('arr', 'heartbeat');  -- error: run_recovery_actions: heartbeat: metadata is not a JSON object; it is left as it is (19)
insert into run_recovery_actions (run_id, action, step) values ('bad', 'checkpoint', 1);  -- error: run_recovery_actions: checkpoint: metadata is not a JSON object; it is left as it is (19)
insert into run_recovery_actions (run_id, action, threshold_ms) values ('bad', 'fail', 0);  -- error: run_recovery_actions: fail: metadata is not a JSON object; it is left as it is (19)
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 2);  -- error: run_recovery_actions: heartbeat: stale lease: the run was recovered by another client, this executor must stop (19)
insert into run_recovery_actions (run_id, action) values ('r1', 'resume');  -- error: run_recovery_actions: resume: run is still alive: its last heartbeat is within the threshold (orphan actions need a stale heartbeat) (19)
insert into run_recovery_actions (run_id, action) values ('r1', 'fail');  -- error: run_recovery_actions: fail: run is still alive: its last heartbeat is within the threshold (orphan actions need a stale heartbeat) (19)
insert into run_recovery_actions (run_id, action) values ('r1', 'dismiss');  -- error: run_recovery_actions: dismiss: run is still alive: its last heartbeat is within the threshold (orphan actions need a stale heartbeat) (19)
select count(*) from protocol_runs p join temp.snap s using (accession_id) where p.properties_json is s.properties_json and p.status is s.status and p.end_time is s.end_time;  -- 4

-- One INSERT ... SELECT acts on many runs, all or nothing: 'bad' (live, never
-- stamped, so an orphan) is refused, and so nothing happens to 'arr' either.
select group_concat(run_id) from run_recovery_orphans;  -- arr,bad
insert into run_recovery_actions (run_id, action) select run_id, 'dismiss' from run_recovery_orphans;  -- error: run_recovery_actions: dismiss: metadata is not a JSON object; it is left as it is (19)
select count(*) from protocol_runs p join temp.snap s using (accession_id) where p.properties_json is s.properties_json;  -- 4
delete from protocol_runs where accession_id in ('arr', 'bad');

-- The executor dies: its heartbeat goes stale (backdated here by 45 s).
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') - 45000) where accession_id = 'r1';
select run_id, age_ms >= 45000, checkpoint_step from run_recovery_orphans;  -- r1|1|3

-- resume: lease bumped, resumes + 1, a fresh heartbeat; the outcome is read in the same transaction.
begin;
insert into run_recovery_actions (run_id, action) values ('r1', 'RESUME');
select status, lease, resumes, age_ms between 0 and 5000, checkpoint_step, checkpoint_state from run_recovery_runs where run_id = 'r1';  -- RUNNING|2|1|1|3|"plate 3"
commit;
select json_remove(properties_json -> '$.recoveryLog[0]', '$.at', '$.lastHeartbeat') from protocol_runs where accession_id = 'r1';  -- {"action":"resume","from":"RUNNING","to":"RUNNING","checkpointStep":3,"leaseBefore":1,"leaseAfter":2}
select count(*) from run_recovery_orphans;  -- 0
-- A second client that read the same orphan is told it lost the race.
insert into run_recovery_actions (run_id, action) values ('r1', 'resume');  -- error: run_recovery_actions: resume: run was already recovered by another client since its last heartbeat (19)
-- The old executor wakes up: its heartbeat, checkpoint and plain write are refused.
insert into run_recovery_actions (run_id, action, lease) values ('r1', 'heartbeat', 1);  -- error: run_recovery_actions: heartbeat: stale lease: the run was recovered by another client, this executor must stop (19)
insert into run_recovery_actions (run_id, action, lease, step) values ('r1', 'checkpoint', 1, 9);  -- error: run_recovery_actions: checkpoint: stale lease: the run was recovered by another client, this executor must stop (19)
update protocol_runs set properties_json = json_set(properties_json, '$.lease', 1) where accession_id = 'r1';  -- error: run_recovery_lease_guard: stale write refused: the metadata carries an older lease than the run holds (the run was recovered by another client) (19)
-- The new executor goes on with the new lease.
insert into run_recovery_actions (run_id, action, lease, step, state) values ('r1', 'checkpoint', 2, 4, '{"plate":"P1","next_well":"D1"}');
select lease, checkpoint_step from run_recovery_runs where run_id = 'r1';  -- 2|4

-- A rolled-back transaction leaves the run as it was.
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') - 45000) where accession_id = 'r1';
create temp table snap2 as select * from protocol_runs;
begin;
insert into run_recovery_actions (run_id, action) values ('r1', 'resume');
select lease from run_recovery_runs where run_id = 'r1';  -- 3
rollback;
select count(*) from protocol_runs p join temp.snap2 s using (accession_id) where p.properties_json is s.properties_json and p.status is s.status;  -- 2

-- max_resumes (3 by default) from the stored config: past it, fail is suggested.
update protocol_runs set properties_json = json_set(properties_json, '$.resumes', 3) where accession_id = 'r1';
insert into run_recovery_actions (run_id, action) values ('r1', 'resume');  -- error: run_recovery_actions: resume: too many resumes (max_resumes reached): mark it as failed instead (action 'fail') (19)

-- dismiss: hidden from the orphans until it heartbeats again.
insert into run_recovery_actions (run_id, action) values ('r1', 'dismiss');
select count(*), (select dismissed from run_recovery_runs where run_id = 'r1') from run_recovery_orphans;  -- 0|1
insert into run_recovery_actions (run_id, action) values ('r1', 'dismiss');  -- error: run_recovery_actions: dismiss: run was already dismissed at its last heartbeat; it shows again once it heartbeats (19)
select properties_json -> '$.recoveryLog[#-1].action', properties_json -> '$.recoveryLog[#-1].leaseAfter' from protocol_runs where accession_id = 'r1';  -- "dismiss"|2

-- fail: status in the row's case, end_time and updated_at set, lease bumped.
insert into run_recovery_actions (run_id, action, threshold_ms) values ('r1', 'fail', 10000);
select r.status, end_time like '____-__-__T__:__:__.___Z', updated_at = end_time, lease from run_recovery_runs r join protocol_runs on accession_id = run_id where run_id = 'r1';  -- FAILED|1|1|3
select json_group_array(value ->> '$.action') from protocol_runs, json_each(properties_json, '$.recoveryLog') where accession_id = 'r1';  -- ["resume","dismiss","fail"]
insert into run_recovery_actions (run_id, action, threshold_ms) values ('r1', 'fail', 0);  -- error: run_recovery_actions: fail: run was already recovered by another client since its last heartbeat (19)
insert into run_recovery_actions (run_id, action) values ('r1', 'heartbeat');  -- error: run_recovery_actions: heartbeat: run is not live: only a run in a live status has an executor (19)
select properties_json ->> '$.operator' from protocol_runs where accession_id = 'r1';  -- ana

-- Every orphan at once.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('a', 'A', 'running', NULL, 'p'), ('b', 'B', 'Paused', NULL, 'p');
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', 1000) where accession_id in ('a', 'b');
insert into run_recovery_actions (run_id, action) select run_id, 'fail' from run_recovery_orphans;
select accession_id, status, properties_json ->> '$.lease' from protocol_runs where accession_id in ('a', 'b') order by 1;  -- a|failed|2
                                                                                                                           -- b|Failed|2
select run_id, live from run_recovery_runs where run_id in ('a', 'b') order by 1;  -- a|0
                                                                                   -- b|0

-- run_recovery_runs filtered by run_id is one primary-key lookup.
explain query plan select * from run_recovery_runs where run_id = 'r1';  -- QUERY PLAN
                                                                         -- `--SEARCH protocol_runs USING INDEX sqlite_autoindex_protocol_runs_1 (accession_id=?)
