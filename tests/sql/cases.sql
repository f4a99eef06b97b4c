-- Status spellings (UPPERCASE, Capitalized databases), a custom runs table with
-- its own column names, a hostile table name, and the extension working with
-- the triggers (a fenced-off executor's plain write).

.read sql/protocol_runs.sql

-- An UPPERCASE database: statuses are matched case-insensitively and a new
-- status is written in the row's case.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('U1', 'u1', 'RUNNING', '{"lastHeartbeat":1000,"checkpointStep":1}', 'p'),
  ('U2', 'u2', 'PAUSING', '{"lastHeartbeat":2000}', 'p'),
  ('U3', 'u3', 'CANCELLED', '{"lastHeartbeat":1}', 'p'),
  ('U4', 'u4', 'QUEUED', NULL, 'p');
select run_recovery_install() is not null;  -- 1
select group_concat(run_id || ':' || status) from orphaned_runs;  -- U1:RUNNING,U2:PAUSING
select recover_run('U2', 'fail') ->> '$.status', (select status from protocol_runs where accession_id = 'U2');  -- FAILED|FAILED
select recover_run('U1', 'resume') ->> '$.status', (select status from protocol_runs where accession_id = 'U1');  -- RUNNING|RUNNING
select run_heartbeat('U3');  -- error: run_heartbeat: run 'U3' is not live, found status 'CANCELLED'; only a run in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention has an executor to stamp it
select recover_run('U3', 'fail');  -- error: recover_run: run 'U3' is not live, found status 'CANCELLED'; only runs in preparing, running, pausing, paused, resuming, canceling, intervening, requires_intervention can be orphaned
-- The trigger stamps a transition into an UPPERCASE live status.
update protocol_runs set status = 'PREPARING' where accession_id = 'U4';
select properties_json ->> '$.lastHeartbeat' > 1700000000000, properties_json ->> '$.lease' from protocol_runs where accession_id = 'U4';  -- 1|1
select run_heartbeat('U4', 1) > 1700000000000;  -- 1

-- Extension and triggers together: after a resume, the old executor (lease 1)
-- writing the metadata directly is refused by the lease guard; its heartbeat
-- through the extension is refused too.
update protocol_runs set properties_json = json_set(properties_json, '$.checkpointStep', 9, '$.lease', 1) where accession_id = 'U1';  -- error: run_recovery_lease_guard: stale write refused: the metadata carries an older lease than the run holds (the run was recovered by another client) (19)
select run_heartbeat('U1', 1);  -- error: run_heartbeat: stale lease 1 for run 'U1', found lease 2: the run was recovered by another client, this executor must stop
select properties_json ->> '$.checkpointStep', properties_json ->> '$.lease' from protocol_runs where accession_id = 'U1';  -- 1|2
-- A plain app write that drops the recovery keys keeps them (merge-back), so
-- a resume is not undone.
update protocol_runs set properties_json = '{"app":"saved"}' where accession_id = 'U1';
select properties_json ->> '$.app', properties_json ->> '$.lease', properties_json ->> '$.resumes', properties_json ->> '$.checkpointStep', json_array_length(properties_json, '$.recoveryLog') from protocol_runs where accession_id = 'U1';  -- saved|2|1|1|1
select run_recovery_uninstall() ->> '$.uninstalled';  -- 1

-- A custom runs table: integer ids, its own status and metadata columns, its own
-- live statuses; no name, end_time or updated_at columns.
create table jobs (id INTEGER PRIMARY KEY, title TEXT, state TEXT, meta TEXT);
create index jobs_state on jobs (state);
insert into jobs values (1, 'a', 'active', '{"lastHeartbeat":1000}'), (2, 'b', 'ACTIVE', NULL), (3, 'c', 'done', NULL), (4, 'd', 'waiting', NULL);
select run_recovery_install('{"table":"jobs"}');  -- error: run_recovery_install: table 'jobs' has no column 'accession_id' (config key 'id_column')
select run_recovery_install('{"table":"jobs","id_column":"id","status_column":"state","metadata_column":"meta","live_statuses":["active"],"stale_after_ms":1000}');  -- {"table":"jobs","id_column":"id","status_column":"state","metadata_column":"meta","name_column":null,"end_time_column":null,"updated_at_column":null,"stale_after_ms":1000,"live_statuses":["active"],"max_resumes":3}
select run_id, name, status, last_heartbeat from orphaned_runs;  -- 1|NULL|active|1000
select meta ->> '$.lastHeartbeat' > 1700000000000 from jobs where id = 2;  -- 1
select json_remove(recover_run(1, 'fail'), '$.age_ms');  -- {"run_id":"1","action":"fail","status":"failed","previous_status":"active","lease":2,"resumes":0,"last_heartbeat":1000,"checkpoint_step":null,"checkpoint_state":null}
select id, title, state from jobs where id = 1;  -- 1|a|failed
select run_heartbeat(2) > 1700000000000, run_heartbeat('2') > 1700000000000;  -- 1|1
select run_checkpoint(2, 1, '{"well":"A1"}') > 1700000000000;  -- 1
select run_heartbeat(9);  -- error: run_heartbeat: no run with id '9'
select run_heartbeat(3);  -- error: run_heartbeat: run '3' is not live, found status 'done'; only a run in active has an executor to stamp it
-- The protocol's default live statuses mean nothing here.
update jobs set state = 'running' where id = 4;
select meta from jobs where id = 4;  -- NULL
update jobs set state = 'active' where id = 4;
select meta ->> '$.lease' from jobs where id = 4;  -- 1
-- Optional columns can be named later; the rest of the stored config is kept.
select run_recovery_install('{"name_column":"title"}') ->> '$.name_column';  -- title
-- (sorted by id: both heartbeats are from this millisecond or the last, so their order is the clock's)
select group_concat(run_id || ':' || name) from (select run_id, name from orphaned_runs(0, 4102444800000) order by run_id);  -- 2:b,4:d
explain query plan select * from run_recovery_orphans;  -- QUERY PLAN
                                                       -- `--SEARCH jobs USING INDEX jobs_state (state=?)
select run_recovery_uninstall();  -- {"uninstalled":true,"table":"jobs"}

-- A hostile table name is an identifier, never SQL: install works on it, and
-- table y survives.
create table "x""; DROP TABLE y; --" (id TEXT PRIMARY KEY, status TEXT, properties_json TEXT);
create table y (v);
insert into y values (1);
insert into "x""; DROP TABLE y; --" values ('h1', 'running', NULL);
select run_recovery_install('{"table":"x\"; DROP TABLE y; --","id_column":"id"}') ->> '$.table';  -- x"; DROP TABLE y; --
select run_heartbeat('h1') > 1700000000000;  -- 1
select properties_json ->> '$.lease' from "x""; DROP TABLE y; --";  -- 1
select count(*) from orphaned_runs(0, 4102444800000);  -- 1
select (select count(*) from y), (select count(*) from sqlite_schema where name = 'y');  -- 1|1
select run_recovery_uninstall() ->> '$.table';  -- x"; DROP TABLE y; --
select (select count(*) from y), (select count(*) from sqlite_schema where name like 'run_recovery%');  -- 1|0
-- Hostile column names too.
select run_recovery_install('{"table":"x\"; DROP TABLE y; --","id_column":"id","status_column":"status\"); DROP TABLE y; --"}');  -- error: run_recovery_install: table 'x"; DROP TABLE y; --' has no column 'status"); DROP TABLE y; --' (config key 'status_column')
select count(*) from y;  -- 1

-- One case rule everywhere, non-ASCII statuses included: a status is live
-- when it is a live status spelled lowercase, UPPERCASE or Capitalized
-- (Unicode case mapping); the triggers, orphaned_runs, the views and every
-- function agree, and any other mixture is not live for any of them.
create table lab_runs (id text primary key, state text, meta text);
select run_recovery_install('{"table":"lab_runs","id_column":"id","status_column":"state","metadata_column":"meta","name_column":null,"end_time_column":null,"updated_at_column":null,"live_statuses":["Läuft","İşlem"]}') ->> '$.live_statuses';  -- ["läuft","İşlem"]
insert into lab_runs values ('a', 'LÄUFT', '{}'), ('b', 'läuft', '{}'), ('c', 'Läuft', '{}'), ('d', 'lÄuft', '{}'), ('e', 'İŞLEM', '{}'), ('f', 'LÄUFT-X', '{}'), ('g', 'İşlem', '{}');
select group_concat(id || ':' || coalesce(meta ->> '$.lease', '-'), ' ') from lab_runs;  -- a:1 b:1 c:1 d:- e:1 f:- g:1
select group_concat(run_id || ':' || live, ' ') from run_recovery_runs;  -- a:1 b:1 c:1 d:0 e:1 f:0 g:1
select run_heartbeat('a') > 0, run_heartbeat('e') > 0;  -- 1|1
select run_heartbeat('d');  -- error: run_heartbeat: run 'd' is not live, found status 'lÄuft'; only a run in läuft, İşlem has an executor to stamp it
insert or replace into run_recovery_settings (key, value) values ('allow_backdating', '1');
update lab_runs set meta = json_set(meta, '$.lastHeartbeat', 1000);
delete from run_recovery_settings where key = 'allow_backdating';
select group_concat(run_id, ' ') from (select run_id from orphaned_runs order by run_id);  -- a b c e g
select recover_run('a', 'fail') ->> '$.status', recover_run('c', 'fail') ->> '$.status', recover_run('e', 'dismiss') ->> '$.status', recover_run('g', 'resume') ->> '$.status';  -- FAILED|Failed|İŞLEM|İşlem
select recover_run('d', 'fail');  -- error: recover_run: run 'd' is not live, found status 'lÄuft'; only runs in läuft, İşlem can be orphaned
