-- selftest: must fail with: -error: boom
select 1;  -- error: boom
