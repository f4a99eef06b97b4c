-- The actions on a custom table, with hostile identifiers and a custom config
-- (installed by the extension; the actions themselves are plain SQL).
create table "lab ""jobs""; drop table x; --" (
  "id'); drop table y; --" integer primary key,
  "st""ate" text,
  "m'eta" text,
  title text
);
create table x (a); create table y (b);
insert into "lab ""jobs""; drop table x; --" values (1, 'Active', '{"k":"v"}', 'first'), (2, 'ACTIVE', NULL, 'second'), (3, 'done', NULL, 'third');
select run_recovery_install('{"table":"lab \"jobs\"; drop table x; --","id_column":"id''); drop table y; --","status_column":"st\"ate","metadata_column":"m''eta","name_column":"title","live_statuses":["active"],"stale_after_ms":60000,"max_resumes":1}') ->> '$.max_resumes';  -- 1
-- This file ages runs with plain writes of lastHeartbeat: allowed on purpose here.
insert into run_recovery_settings (key, value) values ('allow_backdating', '1');
select count(*) from sqlite_schema where name in ('x', 'y');  -- 2
select run_id, name, status, live, lease from run_recovery_runs order by run_id;  -- 1|first|Active|1|1
                                                                                -- 2|second|ACTIVE|1|1
                                                                                -- 3|third|done|0|1
-- Integer ids; the id column's affinity applies as for the functions.
insert into run_recovery_actions (run_id, action, lease, step, state) values (1, 'checkpoint', 1, 5, '{"w":1}');
insert into run_recovery_actions (run_id, action, lease) values ('2', 'heartbeat', 1);
insert into run_recovery_actions (run_id, action) values (3, 'heartbeat');  -- error: run_recovery_actions: heartbeat: run is not live: only a run in a live status has an executor (19)
-- The stored stale_after_ms (60 s) is the default threshold: 45 s is not stale.
update "lab ""jobs""; drop table x; --" set "m'eta" = json_set("m'eta", '$.lastHeartbeat', ("m'eta" ->> '$.lastHeartbeat') - 45000);
insert into run_recovery_actions (run_id, action) values (1, 'resume');  -- error: run_recovery_actions: resume: run is still alive: its last heartbeat is within the threshold (orphan actions need a stale heartbeat) (19)
insert into run_recovery_actions (run_id, action, threshold_ms) values (1, 'resume', 30000);
select lease, resumes, checkpoint_step from run_recovery_runs where run_id = 1;  -- 2|1|5
-- max_resumes 1 from the stored config.
update "lab ""jobs""; drop table x; --" set "m'eta" = json_set("m'eta", '$.lastHeartbeat', 1000) where "id'); drop table y; --" = 1;
insert into run_recovery_actions (run_id, action) values (1, 'resume');  -- error: run_recovery_actions: resume: too many resumes (max_resumes reached): mark it as failed instead (action 'fail') (19)
-- fail writes the row's case; the table has no end_time or updated_at column.
insert into run_recovery_actions (run_id, action) values (1, 'fail');
select "st""ate", "m'eta" ->> '$.k', "m'eta" ->> '$.lease' from "lab ""jobs""; drop table x; --" where "id'); drop table y; --" = 1;  -- Failed|v|3
-- The hostile names stayed names.
select count(*) from sqlite_schema where name in ('x', 'y');  -- 2
select run_recovery_uninstall() ->> '$.uninstalled';  -- 1
select count(*) from sqlite_schema where name like 'run_recovery%';  -- 0
