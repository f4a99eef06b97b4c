-- selftest: must fail with:     +b
select 'a' union all select 'b';  -- a
