-- orphaned_runs([threshold_ms [, now_ms]]) with hidden include_dismissed, and the
-- pure-SQL view run_recovery_orphans. Heartbeats are seeded before install
-- (install keeps an existing lastHeartbeat) and now_ms is passed explicitly,
-- so every result is deterministic.

.read sql/protocol_runs.sql

-- 'alive' was seen in 2100: alive at a clock of 2100; at any clock more
-- than the threshold before that, its heartbeat is one from a clock that was
-- wrong, listed (age_ms negative) so the run can be found and recovered.
insert into protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) values
  ('o1', 'one', 'running', '{"lastHeartbeat":1000,"checkpointStep":2,"checkpointState":{"plate":3},"app":1}', 'p'),
  ('o2', 'two', 'PAUSED', '{"lastHeartbeat":2000,"lease":4,"resumes":1}', 'p'),
  ('o3', 'three', 'Requires_intervention', '{"lastHeartbeat":3000}', 'p'),
  ('mixed', 'mx', 'rUnNiNg', '{"lastHeartbeat":3500}', 'p'),
  ('alive', 'al', 'running', '{"lastHeartbeat":4102444800000}', 'p'),
  ('done', 'd', 'completed', '{"lastHeartbeat":1}', 'p'),
  ('q', 'q', 'queued', '{"lastHeartbeat":1}', 'p'),
  ('arr', 'ar', 'running', '[1]', 'p');

select * from orphaned_runs;  -- error: orphaned_runs: run_recovery is not installed in this database; run SELECT run_recovery_install(); first (or: run-recovery install DB)
select run_recovery_install() is not null;  -- 1

-- Default threshold (stale_after_ms 30000) at the real clock: every live run
-- with an old heartbeat, oldest first. A live run whose metadata is not an
-- object has no readable heartbeat, so it counts as never seen (listed first).
-- Terminal and queued runs are never orphans.
select run_id, name, status, last_heartbeat, checkpoint_step, checkpoint_state, lease, resumes, dismissed, age_ms > 1700000000000 from orphaned_runs;  -- arr|ar|running|NULL|NULL|NULL|1|0|0|1
                                                                                                                                               -- o1|one|running|1000|2|{"plate":3}|1|0|0|1
                                                                                                                                               -- o2|two|PAUSED|2000|NULL|NULL|4|1|0|1
                                                                                                                                               -- o3|three|Requires_intervention|3000|NULL|NULL|1|0|0|1
                                                                                                                                               -- alive|al|running|4102444800000|NULL|NULL|1|0|0|0
-- Statuses are matched through the status index in three spellings (lowercase,
-- UPPERCASE, Capitalized); 'rUnNiNg' is none of them and is not listed.
select count(*) from orphaned_runs where run_id = 'mixed';  -- 0

-- Explicit threshold_ms and now_ms; the hidden columns show what was used.
select run_id, age_ms, threshold_ms, now_ms, include_dismissed from orphaned_runs(1000, 4102444802000);  -- arr|4102444802000|1000|4102444802000|0
                                                                                                        -- o1|4102444801000|1000|4102444802000|0
                                                                                                        -- o2|4102444800000|1000|4102444802000|0
                                                                                                        -- o3|4102444799000|1000|4102444802000|0
                                                                                                        -- alive|2000|1000|4102444802000|0
-- Strictly older than the threshold: an age equal to it is not an orphan.
select group_concat(run_id) from orphaned_runs(2000, 4102444802000);  -- arr,o1,o2,o3
select group_concat(run_id) from orphaned_runs(1999, 4102444802000);  -- arr,o1,o2,o3,alive
-- The same as constraints on the hidden columns.
select group_concat(run_id) from orphaned_runs where threshold_ms = 1500 and now_ms = 3000;  -- arr,o1,alive
select group_concat(run_id) from orphaned_runs where now_ms = 3001 and threshold_ms = 0;  -- arr,o1,o2,o3,alive
select threshold_ms, now_ms > 1700000000000, include_dismissed from orphaned_runs limit 1;  -- 30000|1|0
-- Several values for an input: one pass each.
select group_concat(run_id || ':' || threshold_ms) from orphaned_runs where now_ms = 3001 and threshold_ms in (1500, 0);  -- arr:0,o1:0,o2:0,o3:0,alive:0,arr:1500,o1:1500,alive:1500
-- Any order can be asked for.
select group_concat(run_id) from (select run_id from orphaned_runs(0, 5000) order by last_heartbeat desc);  -- alive,o3,o2,o1,arr
-- A NULL input gives no rows (as generate_series does).
select count(*) from orphaned_runs(NULL);  -- 0
select count(*) from orphaned_runs(0, NULL);  -- 0
select count(*) from orphaned_runs where include_dismissed = NULL;  -- 0
-- Bad inputs.
select * from orphaned_runs(-1);  -- error: orphaned_runs: threshold_ms must be an integer >= 0, found -1
select * from orphaned_runs(1.5);  -- error: orphaned_runs: threshold_ms must be an integer >= 0, found 1.5
select * from orphaned_runs('1000');  -- error: orphaned_runs: threshold_ms must be an integer >= 0, found '1000'
select * from orphaned_runs(x'00');  -- error: orphaned_runs: threshold_ms must be an integer >= 0, found a blob of 1 bytes
select * from orphaned_runs(0, -5);  -- error: orphaned_runs: now_ms must be an integer >= 0, found -5
select * from orphaned_runs(0, 5.5);  -- error: orphaned_runs: now_ms must be an integer >= 0, found 5.5
select * from orphaned_runs where include_dismissed = 2;  -- error: orphaned_runs: include_dismissed must be 0 or 1, found 2
select * from orphaned_runs where include_dismissed = -1;  -- error: orphaned_runs: include_dismissed must be 0 or 1, found -1
select * from orphaned_runs(1, 2, 3);  -- error: orphaned_runs: include_dismissed must be 0 or 1, found 3
select * from orphaned_runs(1, 2, 3, 4);  -- error: too many arguments on orphaned_runs() - max 3

-- Dismissed orphans are hidden unless include_dismissed = 1 ...
select recover_run('o2', 'dismiss', 1000) ->> '$.action';  -- dismiss
select group_concat(run_id) from orphaned_runs(1000, 4102444802000);  -- arr,o1,o3,alive
select group_concat(run_id || ':' || dismissed) from orphaned_runs(1000, 4102444802000) where include_dismissed = 1;  -- arr:0,o1:0,o2:1,o3:0,alive:0
select group_concat(run_id || ':' || dismissed) from orphaned_runs(1000, 4102444802000, 1);  -- arr:0,o1:0,o2:1,o3:0,alive:0
select count(*) from orphaned_runs where run_id = 'o2';  -- 0
-- ... until the run heartbeats again: then it is alive, and when that heartbeat
-- goes stale it is an orphan again, no longer dismissed.
select run_heartbeat('o2') > 1700000000000;  -- 1
select count(*) from orphaned_runs where run_id = 'o2';  -- 0
select run_id, dismissed from orphaned_runs(0, 4102444900000) where run_id = 'o2';  -- o2|0

-- Served from the status index, not a scan of every run: the view's plan
-- (orphaned_runs falls back to the very same SELECT, with parameters and an
-- ORDER BY). The view has no ORDER BY of its own, so no sort unless asked.
explain query plan select * from run_recovery_orphans;  -- QUERY PLAN
                                                       -- `--SEARCH protocol_runs USING INDEX ix_protocol_runs_status (status=?)
-- The hidden arguments are pushed down (idxNum 0x1 threshold_ms, 0x2 now_ms, 0x4 include_dismissed),
-- and the bits from 0x8 up say which columns the query reads (0x8 run_id ... 0x1000 dismissed):
-- only those are computed. All ten: 0x1ff8 = 8184.
explain query plan select * from orphaned_runs(1, 2);  -- QUERY PLAN
                                                       -- `--SCAN orphaned_runs VIRTUAL TABLE INDEX 8187:
explain query plan select * from orphaned_runs where include_dismissed = 1;  -- QUERY PLAN
                                                                             -- `--SCAN orphaned_runs VIRTUAL TABLE INDEX 8188:
explain query plan select run_id, lease from orphaned_runs(1, 2);  -- QUERY PLAN
                                                                   -- `--SCAN orphaned_runs VIRTUAL TABLE INDEX 1035:
explain query plan select count(*) from orphaned_runs;  -- QUERY PLAN
                                                        -- `--SCAN orphaned_runs VIRTUAL TABLE INDEX 0:
-- The view run_recovery_orphans: same columns and rows at the configured
-- threshold and the real clock, for clients without the extension.
select group_concat(run_id) from (select run_id from run_recovery_orphans order by age_ms desc, run_id);  -- arr,o1,o3,alive
-- Unordered, the rows come in the status index's order (one status here: by rowid).
select group_concat(run_id) from run_recovery_orphans;  -- o3,o1,alive,arr
select group_concat(name, ',') from pragma_table_info('run_recovery_orphans');  -- run_id,name,status,last_heartbeat,age_ms,checkpoint_step,checkpoint_state,lease,resumes,dismissed
select count(*) from (select run_id, name, status, last_heartbeat, checkpoint_step, checkpoint_state, lease, resumes, dismissed from run_recovery_orphans
                      except select run_id, name, status, last_heartbeat, checkpoint_step, checkpoint_state, lease, resumes, dismissed from orphaned_runs);  -- 0
-- The view follows the installed threshold.
select run_recovery_install('{"stale_after_ms":4102444800000}') ->> '$.stale_after_ms';  -- 4102444800000
select count(*) from run_recovery_orphans;  -- 0
select count(*) from orphaned_runs;  -- 0
-- (the heartbeat of 2100 is no longer more than stale_after_ms ahead: alive)
select count(*) from orphaned_runs(30000);  -- 3
