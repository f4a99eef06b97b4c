-- recover_run(id, action [, threshold_ms]): resume, fail, dismiss, as a
-- compare-and-set that acts only on a run orphaned at that moment.
-- Heartbeats are seeded before install so the orphans are old.

.read sql/protocol_runs.sql

insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('o1', 'one', 'running', '{"app":"kept","lastHeartbeat":1000,"checkpointStep":2,"checkpointState":{"plate":3},"z":[1]}', 'p'),
  ('o2', 'two', 'PAUSED', '{"lastHeartbeat":2000,"lease":4,"resumes":1}', 'p'),
  ('o3', 'three', 'Requires_intervention', '{"lastHeartbeat":3000}', 'p'),
  ('cap', 'c', 'running', '{"lastHeartbeat":5,"resumes":3}', 'p'),
  ('cap2', 'c', 'resuming', '{"lastHeartbeat":5}', 'p'),
  ('Cap', 'C', 'Running', '{"lastHeartbeat":5}', 'p'),
  ('mixed', 'mx', 'rUnNiNg', '{"lastHeartbeat":3500}', 'p'),
  ('alive', 'al', 'running', json_object('lastHeartbeat', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 20000), 'p'),
  ('ahead', 'ah', 'running', '{"lastHeartbeat":4102444800000}', 'p'),
  ('done', 'd', 'completed', '{"lastHeartbeat":1}', 'p'),
  ('q', 'q', 'queued', '{"lastHeartbeat":1}', 'p'),
  ('arr', 'ar', 'running', '[1]', 'p'),
  ('bad', 'b', 'running', '{oops', 'p'),
  ('tx', 't', 'running', '{"lastHeartbeat":10}', 'p');

select recover_run('o1', 'resume');  -- error: recover_run: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_recovery_install() is not null;  -- 1
create temp table snapshot as select accession_id, status, properties_json from protocol_runs;

-- resume: status unchanged, lease + 1, resumes + 1, a fresh heartbeat; the
-- result carries what the new executor needs.
create temp table r as select recover_run('o1', 'resume') as j;
select j ->> '$.run_id', j ->> '$.action', j ->> '$.status', j ->> '$.previous_status', j ->> '$.lease', j ->> '$.resumes', j ->> '$.checkpoint_step', j -> '$.checkpoint_state' from temp.r;  -- o1|resume|running|running|2|1|2|{"plate":3}
select j ->> '$.last_heartbeat' > 1700000000000, j ->> '$.age_ms' > 1700000000000 from temp.r;  -- 1|1
select status, properties_json ->> '$.lastHeartbeat' = (select j ->> '$.last_heartbeat' from temp.r) from protocol_runs where accession_id = 'o1';  -- running|1
-- The app's keys are kept in their order; one log record per decision.
select group_concat(key) from protocol_runs, json_each(properties_json) where accession_id = 'o1';  -- app,lastHeartbeat,checkpointStep,checkpointState,z,lease,resumes,recoveryLog
select json_remove(properties_json -> '$.recoveryLog[0]', '$.at') from protocol_runs where accession_id = 'o1';  -- {"action":"resume","from":"running","to":"running","lastHeartbeat":1000,"checkpointStep":2,"leaseBefore":1,"leaseAfter":2}
-- A second client deciding on the same orphan is told it lost.
select recover_run('o1', 'resume');  -- error: recover_run: run 'o1' was already recovered by another client (resume, {any} ms ago); it now holds lease 2
select recover_run('o1', 'fail');  -- error: recover_run: run 'o1' was already recovered by another client (resume, {any} ms ago); it now holds lease 2
-- The old executor is fenced off; the new one carries on with lease 2.
select run_heartbeat('o1', 1);  -- error: run_heartbeat: stale lease 1 for run 'o1', found lease 2: the run was recovered by another client, this executor must stop
select run_checkpoint('o1', 3, '{}', 1);  -- error: run_checkpoint: stale lease 1 for run 'o1', found lease 2: the run was recovered by another client, this executor must stop
select run_checkpoint('o1', 3, '{"plate":4}', 2) > 1700000000000;  -- 1
-- Once the new executor heartbeats, the run is simply alive.
select recover_run('o1', 'fail');  -- error: recover_run: run 'o1' is still alive: last heartbeat {any} ms ago, threshold 30000 ms

-- fail: status -> failed in the row's case (UPPERCASE here); end_time and
-- updated_at set (ISO-8601 UTC); lease bumped.
select json_remove(recover_run('o2', 'fail', 1000), '$.age_ms');  -- {"run_id":"o2","action":"fail","status":"FAILED","previous_status":"PAUSED","lease":5,"resumes":1,"last_heartbeat":2000,"checkpoint_step":null,"checkpoint_state":null}
select status, end_time = updated_at, end_time glob '20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z', properties_json ->> '$.lease' from protocol_runs where accession_id = 'o2';  -- FAILED|1|1|5
select json_remove(properties_json -> '$.recoveryLog[#-1]', '$.at') from protocol_runs where accession_id = 'o2';  -- {"action":"fail","from":"PAUSED","to":"FAILED","lastHeartbeat":2000,"checkpointStep":null,"leaseBefore":4,"leaseAfter":5}
select recover_run('o2', 'resume');  -- error: recover_run: run 'o2' was already recovered by another client (fail, {any} ms ago); it now holds lease 5
select run_heartbeat('o2', 4);  -- error: run_heartbeat: run 'o2' is not live, found status 'FAILED'; only a run in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention has an executor to stamp it
-- Capitalized and lowercase rows keep their case; an odd mixture of cases is
-- not a live status at all (the same three spellings as orphan detection).
select recover_run('Cap', 'fail') ->> '$.status', (select status from protocol_runs where accession_id = 'Cap');  -- Failed|Failed
select recover_run('mixed', 'fail') ->> '$.status', (select status from protocol_runs where accession_id = 'mixed');  -- error: recover_run: run 'mixed' is not live, found status 'rUnNiNg'; only runs in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention can be orphaned
-- Action names are case-insensitive.
select recover_run('cap2', 'RESUME') ->> '$.action';  -- resume

-- dismiss: no status change, no lease change; hidden until the next heartbeat.
select json_remove(recover_run('o3', 'dismiss'), '$.age_ms');  -- {"run_id":"o3","action":"dismiss","status":"Requires_intervention","previous_status":"Requires_intervention","lease":1,"resumes":0,"last_heartbeat":3000,"checkpoint_step":null,"checkpoint_state":null}
select status, properties_json ->> '$.dismissedHeartbeat', json_type(properties_json, '$.lease') from protocol_runs where accession_id = 'o3';  -- Requires_intervention|3000|NULL
select recover_run('o3', 'dismiss');  -- error: recover_run: run 'o3' was already dismissed at heartbeat 3000; it shows again once it heartbeats
-- A dismissed orphan can still be failed or resumed.
select recover_run('o3', 'fail') ->> '$.status';  -- Failed

-- resume past max_resumes is refused, suggesting fail.
select recover_run('cap', 'resume');  -- error: recover_run: run 'cap' was already resumed 3 times, found max_resumes 3; mark it as failed instead: SELECT recover_run('cap', 'fail')
select properties_json from protocol_runs where accession_id = 'cap';  -- {"lastHeartbeat":5,"resumes":3}
select recover_run('cap', 'fail') ->> '$.status';  -- failed

-- Not orphaned: still alive (the age is the clock's), or not live at all.
select recover_run('alive', 'fail');  -- error: recover_run: run 'alive' is still alive: last heartbeat {any} ms in the future (another host's clock?), threshold 30000 ms
-- More than the threshold ahead (a clock that was wrong wrote it): kept as
-- alive, the run could not be recovered until 2100. It is an orphan, and a
-- resume gives the new executor a heartbeat of this clock.
select run_id, age_ms < 0 from orphaned_runs where run_id = 'ahead';  -- ahead|1
select recover_run('ahead', 'resume') ->> '$.lease', (select properties_json ->> '$.lastHeartbeat' < 4102444800000 from protocol_runs where accession_id = 'ahead');  -- 2|1
select recover_run('tx', 'fail', 4102444800000);  -- error: recover_run: run 'tx' is still alive: last heartbeat {any} ms ago, threshold 4102444800000 ms
select recover_run('done', 'fail');  -- error: recover_run: run 'done' is not live, found status 'completed'; only runs in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention can be orphaned
select recover_run('q', 'resume');  -- error: recover_run: run 'q' is not live, found status 'queued'; only runs in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention can be orphaned
select recover_run('q', 'dismiss');  -- error: recover_run: run 'q' is not live, found status 'queued'; only runs in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention can be orphaned

-- Metadata that is not a JSON object: refused, row unchanged.
select recover_run('arr', 'fail');  -- error: recover_run: metadata of run 'arr' is a JSON array, not an object; it is left as it is, found '[1]'
select recover_run('bad', 'resume');  -- error: recover_run: metadata of run 'bad' is not valid JSON; it is left as it is, found '{oops'
select recover_run('bad', 'dismiss');  -- error: recover_run: metadata of run 'bad' is not valid JSON; it is left as it is, found '{oops'
select group_concat(accession_id) from (select accession_id from protocol_runs p join temp.snapshot s using (accession_id)
  where p.status is s.status and p.properties_json is s.properties_json and accession_id in ('arr', 'bad', 'alive', 'done', 'q', 'tx') order by 1);  -- alive,arr,bad,done,q,tx

-- Bad arguments.
select recover_run('nope', 'resume');  -- error: recover_run: no run with accession_id 'nope'
select recover_run(NULL, 'resume');  -- error: recover_run: run id must be text or an integer, found NULL
select recover_run(x'00', 'resume');  -- error: recover_run: run id must be text or an integer, found a blob of 1 bytes
select recover_run(2.5, 'resume');  -- error: recover_run: run id must be text or an integer, found 2.5
select recover_run('tx', 'restart');  -- error: recover_run: unknown action 'restart', expected one of 'resume', 'fail', 'dismiss'
select recover_run('tx', NULL);  -- error: recover_run: unknown action NULL, expected one of 'resume', 'fail', 'dismiss'
select recover_run('tx', 1);  -- error: recover_run: unknown action 1, expected one of 'resume', 'fail', 'dismiss'
select recover_run('tx', 'fail', -1);  -- error: recover_run: threshold_ms must be an integer >= 0, found -1
select recover_run('tx', 'fail', 1.5);  -- error: recover_run: threshold_ms must be an integer >= 0, found 1.5
select recover_run('tx', 'fail', '1000');  -- error: recover_run: threshold_ms must be an integer >= 0, found '1000'
select recover_run('tx', 'fail', NULL);  -- error: recover_run: threshold_ms must be an integer >= 0, found NULL
select recover_run('tx');  -- error: wrong number of arguments to function recover_run()

-- A recovery inside a transaction that is rolled back leaves nothing behind.
begin;
select recover_run('tx', 'fail') ->> '$.status';  -- failed
select status from protocol_runs where accession_id = 'tx';  -- failed
rollback;
select p.status, p.properties_json, p.end_time from protocol_runs p where accession_id = 'tx';  -- running|{"lastHeartbeat":10}|NULL

-- max_resumes from the install config (0: never resume).
select run_recovery_install('{"max_resumes":0}') ->> '$.max_resumes';  -- 0
select recover_run('tx', 'resume');  -- error: recover_run: run 'tx' was already resumed 0 times, found max_resumes 0; mark it as failed instead: SELECT recover_run('tx', 'fail')
-- The configured stale_after_ms is the default threshold.
select run_recovery_install('{"stale_after_ms":4102444800000}') ->> '$.stale_after_ms';  -- 4102444800000
select recover_run('tx', 'fail');  -- error: recover_run: run 'tx' is still alive: last heartbeat {any} ms ago, threshold 4102444800000 ms
select recover_run('tx', 'fail', 1000) ->> '$.status';  -- failed
