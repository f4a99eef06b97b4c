-- selftest: must fail with: +error: run_heartbeat: run id must be text or an integer, found NULL
select run_heartbeat(NULL);  -- error: run_heartbeat: some other message
