"""A tenant app for bench/tenants.py only: its migrations are written by the benchmark (one more per
run, adding a nullable column and an index) into a folder named by BENCH_TENANT_MIGRATIONS, so that
applying a new migration to every organization can be measured on a database that is kept."""
