-- selftest: must fail with: (setup statement: must not fail)
create table t(x);
insert into nosuch values (1);
select count(*) from t;  -- 0
