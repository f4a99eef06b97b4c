-- run_heartbeat(id [, lease]) and run_checkpoint(id, step [, state [, lease]]).
-- Heartbeats are wall-clock milliseconds: results are compared with a bound,
-- or with a heartbeat seeded in the future (a heartbeat never moves backwards).

.read sql/protocol_runs.sql

insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('r1', 'one', 'running', '{"app":"kept","nested":{"z":[1,2]}}', 'p'),
  ('future', 'f', 'paused', '{"lastHeartbeat":4102444800000}', 'p'),
  ('arr', 'a', 'running', '[1,2]', 'p'),
  ('bad', 'b', 'running', '{oops', 'p'),
  ('str', 's', 'running', '"x"', 'p'),
  ('done', 'd', 'completed', NULL, 'p'),
  ('q', 'q', 'queued', NULL, 'p'),
  ('42', 'n', 'running', NULL, 'p');

select run_heartbeat('r1');  -- error: run_heartbeat: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_recovery_install() is not null;  -- 1
create temp table snapshot as select accession_id, properties_json from protocol_runs;

-- run_heartbeat: stamps lastHeartbeat (ms) and returns it.
select run_heartbeat('r1') > 1700000000000;  -- 1
select run_heartbeat('r1') = properties_json ->> '$.lastHeartbeat' from protocol_runs where accession_id = 'r1';  -- 1
-- App keys are kept as they were.
select properties_json ->> '$.app', properties_json -> '$.nested', properties_json ->> '$.lease' from protocol_runs where accession_id = 'r1';  -- kept|{"z":[1,2]}|1
-- Never backwards, unless the stored heartbeat is more than stale_after_ms
-- ahead of the clock (a machine whose clock was wrong wrote it): then the
-- rightful executor's stamp repairs it with its own clock. Within the
-- threshold, a heartbeat ahead (another host's clock) is kept.
select run_heartbeat('future') between (select properties_json ->> '$.lastHeartbeat' from protocol_runs where accession_id = 'r1') and 4102444800000 - 1;  -- 1
select properties_json ->> '$.lastHeartbeat' < 4102444800000 from protocol_runs where accession_id = 'future';  -- 1
insert or replace into run_recovery_settings (key, value) values ('allow_backdating', '1');
update protocol_runs set properties_json = json_set(properties_json, '$.lastHeartbeat', properties_json ->> '$.lastHeartbeat' + 20000) where accession_id = 'future';
delete from run_recovery_settings where key = 'allow_backdating';
create temp table ahead as select properties_json ->> '$.lastHeartbeat' as hb from protocol_runs where accession_id = 'future';
select run_heartbeat('future') = (select hb from temp.ahead);  -- 1
-- Integer ids: bound as given, so the column's affinity applies.
select run_heartbeat(42) > 1700000000000, run_heartbeat('42') > 1700000000000;  -- 1|1

-- Bad ids.
select run_heartbeat(NULL);  -- error: run_heartbeat: run id must be text or an integer, found NULL
select run_heartbeat(x'0102');  -- error: run_heartbeat: run id must be text or an integer, found a blob of 2 bytes
select run_heartbeat(1.5);  -- error: run_heartbeat: run id must be text or an integer, found 1.5
select run_heartbeat('nope');  -- error: run_heartbeat: no run with accession_id 'nope'
select run_heartbeat('it''s');  -- error: run_heartbeat: no run with accession_id 'it''s'

-- Only live runs have an executor to stamp them.
select run_heartbeat('done');  -- error: run_heartbeat: run 'done' is not live, found status 'completed'; only a run in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention has an executor to stamp it
select run_heartbeat('q');  -- error: run_heartbeat: run 'q' is not live, found status 'queued'; only a run in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention has an executor to stamp it

-- Metadata that is not a JSON object is refused and left as it is.
select run_heartbeat('arr');  -- error: run_heartbeat: metadata of run 'arr' is a JSON array, not an object; it is left as it is, found '[1,2]'
select run_heartbeat('bad');  -- error: run_heartbeat: metadata of run 'bad' is not valid JSON; it is left as it is, found '{oops'
select run_heartbeat('str');  -- error: run_heartbeat: metadata of run 'str' is a JSON string, not an object; it is left as it is, found '"x"'
select run_checkpoint('arr', 1, '{}');  -- error: run_checkpoint: metadata of run 'arr' is a JSON array, not an object; it is left as it is, found '[1,2]'
select run_checkpoint('bad', 1);  -- error: run_checkpoint: metadata of run 'bad' is not valid JSON; it is left as it is, found '{oops'
select accession_id, p.properties_json from protocol_runs p join temp.snapshot s using (accession_id)
  where accession_id in ('arr', 'bad', 'str', 'done', 'q') and p.properties_json is s.properties_json order by 1;  -- arr|[1,2]
                                                                                                                -- bad|{oops
                                                                                                                -- done|NULL
                                                                                                                -- q|NULL
                                                                                                                -- str|"x"

-- Lease: absent means 1; with a lease the heartbeat succeeds only while the run holds it.
select run_heartbeat('r1', 1) > 1700000000000;  -- 1
select run_heartbeat('r1', 2);  -- error: run_heartbeat: stale lease 2 for run 'r1', found lease 1: the run was recovered by another client, this executor must stop
select run_heartbeat('r1', 0);  -- error: run_heartbeat: lease must be an integer >= 1, found 0
select run_heartbeat('r1', -3);  -- error: run_heartbeat: lease must be an integer >= 1, found -3
select run_heartbeat('r1', '1');  -- error: run_heartbeat: lease must be an integer >= 1, found '1'
select run_heartbeat('r1', 1.0);  -- error: run_heartbeat: lease must be an integer >= 1, found 1.0
select run_heartbeat('r1', NULL);  -- error: run_heartbeat: lease must be an integer >= 1, found NULL
select run_heartbeat();  -- error: wrong number of arguments to function run_heartbeat()
select run_heartbeat('r1', 1, 1);  -- error: wrong number of arguments to function run_heartbeat()

-- run_checkpoint: step and state with a heartbeat, in one statement.
select run_checkpoint('r1', 2, '{"plate":3}') = properties_json ->> '$.lastHeartbeat' from protocol_runs where accession_id = 'r1';  -- 1
select properties_json ->> '$.checkpointStep', properties_json -> '$.checkpointState', properties_json ->> '$.app' from protocol_runs where accession_id = 'r1';  -- 2|{"plate":3}|kept
-- The same step again is allowed; a step behind the committed one is refused.
select run_checkpoint('r1', 2, '{"plate":4}') > 1700000000000;  -- 1
select run_checkpoint('r1', 1);  -- error: run_checkpoint: step 1 of run 'r1' is behind its committed checkpoint, found checkpointStep 2
select properties_json ->> '$.checkpointStep', properties_json -> '$.checkpointState' from protocol_runs where accession_id = 'r1';  -- 2|{"plate":4}
-- State: JSON text, a number, or NULL (JSON null); a plain string needs json_quote().
select run_checkpoint('r1', 3, json_quote('plate 3')) > 0;  -- 1
select properties_json -> '$.checkpointState' from protocol_runs where accession_id = 'r1';  -- "plate 3"
select run_checkpoint('r1', 4, 4.5) > 0;  -- 1
select properties_json -> '$.checkpointState' from protocol_runs where accession_id = 'r1';  -- 4.5
select run_checkpoint('r1', 5, '[1,{"a":null}]') > 0;  -- 1
select properties_json -> '$.checkpointState' from protocol_runs where accession_id = 'r1';  -- [1,{"a":null}]
select run_checkpoint('r1', 6) > 0;  -- 1
select properties_json ->> '$.checkpointStep', json_type(properties_json, '$.checkpointState') from protocol_runs where accession_id = 'r1';  -- 6|null
select run_checkpoint('r1', 6, 'plate 3');  -- error: run_checkpoint: state must be JSON text (wrap a plain string in json_quote()), found 'plate 3'
select run_checkpoint('r1', 6, x'00');  -- error: run_checkpoint: state must be JSON text, a number or NULL, found a blob of 1 bytes
-- Bad steps.
select run_checkpoint('r1', -1);  -- error: run_checkpoint: step must be an integer >= 0, found -1
select run_checkpoint('r1', 1.5);  -- error: run_checkpoint: step must be an integer >= 0, found 1.5
select run_checkpoint('r1', '7');  -- error: run_checkpoint: step must be an integer >= 0, found '7'
select run_checkpoint('r1', NULL);  -- error: run_checkpoint: step must be an integer >= 0, found NULL
select run_checkpoint('r1');  -- error: wrong number of arguments to function run_checkpoint()
-- Bad ids and runs.
select run_checkpoint(NULL, 1);  -- error: run_checkpoint: run id must be text or an integer, found NULL
select run_checkpoint(x'01', 1);  -- error: run_checkpoint: run id must be text or an integer, found a blob of 1 bytes
select run_checkpoint('nope', 1);  -- error: run_checkpoint: no run with accession_id 'nope'
select run_checkpoint('done', 1);  -- error: run_checkpoint: run 'done' is not live, found status 'completed'; only a run in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention has an executor to stamp it
-- Lease.
select run_checkpoint('r1', 7, '{}', 1) > 0;  -- 1
select run_checkpoint('r1', 8, '{}', 2);  -- error: run_checkpoint: stale lease 2 for run 'r1', found lease 1: the run was recovered by another client, this executor must stop
select run_checkpoint('r1', 8, '{}', 0);  -- error: run_checkpoint: lease must be an integer >= 1, found 0
select properties_json ->> '$.checkpointStep' from protocol_runs where accession_id = 'r1';  -- 7

-- A write inside a transaction that is rolled back leaves nothing behind.
create temp table before_tx as select properties_json from protocol_runs where accession_id = 'r1';
begin;
select run_checkpoint('r1', 9, '{"tx":1}') > 0;  -- 1
select properties_json ->> '$.checkpointStep' from protocol_runs where accession_id = 'r1';  -- 9
rollback;
select p.properties_json = b.properties_json, p.properties_json ->> '$.checkpointStep' from protocol_runs p, temp.before_tx b where accession_id = 'r1';  -- 1|7
-- The same inside a savepoint.
savepoint s;
select run_heartbeat('r1') > 0, run_checkpoint('r1', 10) > 0;  -- 1|1
rollback to s;
release s;
select p.properties_json = b.properties_json from protocol_runs p, temp.before_tx b where accession_id = 'r1';  -- 1

-- The heartbeat set in place (run_recovery_heartbeat_text, internal to
-- run_heartbeat): metadata ending in "lastHeartbeat":<13 digits>} keeps the
-- app's spacing; only the digits change.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('sp', 'spaced', 'running', '{"op": "ana", "plates": [1, 2]}', 'p');
select run_heartbeat('sp') > 0;  -- 1
select properties_json like '{"op":"ana","plates":[1,2],%' from protocol_runs where accession_id = 'sp';  -- 1
update protocol_runs set properties_json = replace(properties_json, '"op":"ana","plates":[1,2]', '"op": "ana", "plates": [1, 2]') where accession_id = 'sp';
select run_heartbeat('sp') = properties_json ->> '$.lastHeartbeat' from protocol_runs where accession_id = 'sp';  -- 1
select properties_json like '{"op": "ana", "plates": [1, 2],"lease":1,"lastHeartbeat":%' from protocol_runs where accession_id = 'sp';  -- 1
select run_recovery_heartbeat_text('{"a": 1,"lastHeartbeat":1700000000000}', 1800000000000, NULL);  -- {"a": 1,"lastHeartbeat":1800000000000}
select run_recovery_heartbeat_text('{"lease":2,"lastHeartbeat":1700000000000}', 1800000000000, 2);  -- {"lease":2,"lastHeartbeat":1800000000000}
select run_recovery_heartbeat_text('{"lease":2,"lastHeartbeat":1700000000000}', 1800000000000, 1);  -- error: run_recovery_heartbeat_text: cannot set the heartbeat in place in metadata '{"lease":2,"lastHeartbeat":1700000000000}' at now 1800000000000 with lease 1: that takes a JSON object ending in "lastHeartbeat":<13 digits no later than now>} and a lease that matches (run_heartbeat then writes through SQL)
select run_recovery_heartbeat_text('{"lastHeartbeat":1,"lastHeartbeat":1700000000000}', 1800000000000, NULL);  -- error: run_recovery_heartbeat_text: cannot set the heartbeat in place in metadata '{"lastHeartbeat":1,"lastHeartbeat":1700000000000}' at now 1800000000000 with lease NULL: that takes a JSON object ending in "lastHeartbeat":<13 digits no later than now>} and a lease that matches (run_heartbeat then writes through SQL)
select run_recovery_heartbeat_text(NULL, 1800000000000, NULL);  -- error: run_recovery_heartbeat_text: cannot set the heartbeat in place in metadata NULL at now 1800000000000 with lease NULL: that takes a JSON object ending in "lastHeartbeat":<13 digits no later than now>} and a lease that matches (run_heartbeat then writes through SQL)

-- A schema change that takes part of the install away (here a dropped
-- trigger; a table rebuild drops them all) is noticed by the kept statements
-- (orphaned_runs connected keeps them) before they write: refused, nothing
-- written, until install runs again.
select count(*) >= 0 from orphaned_runs;  -- 1
select run_heartbeat('sp') > 0, run_checkpoint('sp', 1) > 0;  -- 1|1
select run_recovery_schema_fresh();  -- 1
create temp table before_drop as select properties_json from protocol_runs where accession_id = 'sp';
drop trigger run_recovery_replace_keep;
select run_heartbeat('sp');  -- error: run_heartbeat: the schema changed since run_recovery was installed (missing: trigger run_recovery_replace_keep), so the lease fence and merge-back are not in force (a migration that rebuilt the table drops its triggers); run SELECT run_recovery_install() again (with the new column names in its config if they changed)
select run_heartbeat('sp');  -- error: run_heartbeat: the schema changed since run_recovery was installed (missing: trigger run_recovery_replace_keep), so the lease fence and merge-back are not in force (a migration that rebuilt the table drops its triggers); run SELECT run_recovery_install() again (with the new column names in its config if they changed)
select run_checkpoint('sp', 2);  -- error: run_checkpoint: the schema changed since run_recovery was installed (missing: trigger run_recovery_replace_keep), so the lease fence and merge-back are not in force (a migration that rebuilt the table drops its triggers); run SELECT run_recovery_install() again (with the new column names in its config if they changed)
select p.properties_json = b.properties_json from protocol_runs p, temp.before_drop b where accession_id = 'sp';  -- 1
select run_recovery_install() is not null;  -- 1
select run_heartbeat('sp') > 0, run_checkpoint('sp', 2) > 0;  -- 1|1
select run_recovery_schema_fresh(1);  -- error: wrong number of arguments to function run_recovery_schema_fresh()

-- A TEMP table named like the runs table (and one like the settings table)
-- never receives the extension's statements: they are qualified with main.
create temp table protocol_runs (accession_id text primary key, name, status, properties_json, end_time, updated_at);
insert into temp.protocol_runs values ('sp', 'scratch', 'running', '{"lastHeartbeat":1}', null, null);
create temp table run_recovery_settings (key, value);
select run_heartbeat('sp') > 1700000000000, run_checkpoint('sp', 3) > 1700000000000;  -- 1|1
select properties_json ->> '$.checkpointStep' from main.protocol_runs where accession_id = 'sp';  -- 3
select properties_json, (select count(*) from temp.run_recovery_settings) from temp.protocol_runs;  -- {"lastHeartbeat":1}|0
drop table temp.protocol_runs;
drop table temp.run_recovery_settings;
