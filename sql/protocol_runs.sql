-- The host app's runs table, as the app creates it (run_recovery never changes
-- it). Shared by the demo and the tests of every language.
CREATE TABLE protocol_runs (
  accession_id CHAR(32) NOT NULL PRIMARY KEY,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
  updated_at DATETIME,
  name VARCHAR,
  properties_json TEXT,
  start_time DATETIME,
  end_time DATETIME,
  data_directory_path VARCHAR,
  duration_ms INTEGER,
  status VARCHAR(21),
  input_parameters_json TEXT,
  resolved_assets_json TEXT,
  output_data_json TEXT,
  initial_state_json TEXT,
  final_state_json TEXT,
  created_by_user TEXT,
  top_level_protocol_definition_accession_id CHAR(32) NOT NULL,
  protocol_definition_accession_id CHAR(32),
  previous_accession_id CHAR(32)
);
CREATE INDEX ix_protocol_runs_status ON protocol_runs (status);
