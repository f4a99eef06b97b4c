-- selftest: must fail with:     +error: run_heartbeat: run id must be text or an integer, found NULL
-- {any} stands for some text inside a line, not for a missing error or another message.
select 'last heartbeat 3 ms ago';  -- last heartbeat {any} ms ago
select run_heartbeat(NULL);  -- error: run_checkpoint: {any}
