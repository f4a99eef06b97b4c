-- selftest: must fail with:     +2
-- A correct statement, then a wrong expectation: the runner must report the diff.
select 'ok';  -- ok
select 1+1;   -- 3
