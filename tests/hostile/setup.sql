-- Run 'r': running, app keys with numbers SQLite keeps as written, a
-- checkpoint at step 2, resumed once (lease 2), a checkpoint at step 3 with
-- lease 2. Then run 'q' queued with no metadata, and 'done' completed.
INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id)
VALUES ('r', 'Run r', 'running', '{"app":"keep","price":1.50,"big":123456789012345678901234567890,"nested":{"a":[1,2,{"b":null}]}}', 'p');
INSERT INTO run_recovery_actions (run_id, action, step, state) VALUES ('r', 'checkpoint', 2, '{"tips":3}');
INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1');
UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', 1000000000000) WHERE accession_id = 'r';
DELETE FROM run_recovery_settings WHERE key = 'allow_backdating';
INSERT INTO run_recovery_actions (run_id, action) VALUES ('r', 'resume');
INSERT INTO run_recovery_actions (run_id, action, lease, step, state) VALUES ('r', 'checkpoint', 2, 3, '{"tips":4}');
INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id) VALUES ('q', 'Run q', 'queued', 'p');
INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) VALUES ('done', 'Run done', 'completed', '{"x":1}', 'p');
