-- selftest: must fail with:     -(no rows)
select 'surprise';  -- (no rows)
