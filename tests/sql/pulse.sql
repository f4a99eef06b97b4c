-- run_heartbeat_every(id, interval_ms [, lease]) and run_heartbeat_stop(id):
-- the refusals that need no second connection (the runner's database is in
-- memory, where a pulse is refused; the pulse itself is tested in Rust).

.read sql/protocol_runs.sql
insert into protocol_runs (accession_id, status, properties_json, top_level_protocol_definition_accession_id) values ('r1', 'running', NULL, 'p');
select run_recovery_install() is not null;  -- 1

select run_heartbeat_every('r1', 1000);  -- error: run_heartbeat_every: a pulse opens its own connection to the database file, so it needs a file on disk, found an in-memory or temporary database
select run_heartbeat_every('r1', 1000, 1);  -- error: run_heartbeat_every: a pulse opens its own connection to the database file, so it needs a file on disk, found an in-memory or temporary database
select run_heartbeat_every('r1', 5);  -- error: run_heartbeat_every: interval_ms must be an integer >= 10, found 5
select run_heartbeat_every('r1', 'often');  -- error: run_heartbeat_every: interval_ms must be an integer >= 10, found 'often'
select run_heartbeat_every(NULL, 1000);  -- error: run_heartbeat_every: run id must be text or an integer, found NULL
select run_heartbeat_every('r1');  -- error: wrong number of arguments to function run_heartbeat_every()
-- Stopping a run that has no pulse on this connection says so with 0.
select run_heartbeat_stop('r1');  -- 0
select run_heartbeat_stop('nope');  -- 0
select run_heartbeat_stop(NULL);  -- error: run_heartbeat_stop: run id must be text or an integer, found NULL
-- A refused pulse wrote nothing.
select properties_json ->> '$.lease' from protocol_runs;  -- 1
