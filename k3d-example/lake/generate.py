# The sample data of the lake: TPC-H sf0.01 and the sales tables derived from
# it, written as Parquet under <out>/lake/ (bucket `lake`):
#
#   tpch/sf0.01/<table>/<table>.parquet     TPC-H, 8 tables
#   sales/region=<eu|us|asia|africa|mideast>/data_0.parquet
#   sales-private/customers.parquet         a sibling of sales/
#
# Usage: python generate.py <out dir> <scale factor>; prints the row count of
# each table, by key prefix, as JSON on its last line.
#
# `cargo xtask lake up` runs this same file (GENERATE in scripts/src/lake.rs
# includes it), so the example's lake and the local one hold the same data.
import json, os, sys
import duckdb, duckdb_extension_tpch
out, sf = sys.argv[1], sys.argv[2]
ext = os.path.join(os.path.dirname(duckdb_extension_tpch.__file__), "extensions",
                   "v" + duckdb.__version__, "tpch.duckdb_extension")
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"CALL dbgen(sf={sf})")
lake = os.path.join(out, "lake")
tables = {}
for (name,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
    prefix = f"tpch/sf{sf}/{name}/"
    os.makedirs(os.path.join(lake, prefix))
    con.execute(f"COPY {name} TO '{os.path.join(lake, prefix, name)}.parquet' (FORMAT parquet)")
    tables[prefix] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
con.execute("""
    CREATE TABLE sales AS
    SELECT o_orderkey AS order_key, o_custkey AS customer_key, o_orderdate AS order_date,
           o_orderstatus AS status, o_totalprice AS total_price, n_name AS nation,
           CASE r_name WHEN 'EUROPE' THEN 'eu' WHEN 'AMERICA' THEN 'us' WHEN 'ASIA' THEN 'asia'
                       WHEN 'AFRICA' THEN 'africa' ELSE 'mideast' END AS region
    FROM orders JOIN customer ON o_custkey = c_custkey
                JOIN nation ON c_nationkey = n_nationkey
                JOIN region ON n_regionkey = r_regionkey""")
con.execute(f"COPY sales TO '{os.path.join(lake, 'sales')}' (FORMAT parquet, PARTITION_BY (region))")
for region, rows in con.execute("SELECT region, count(*) FROM sales GROUP BY ALL ORDER BY 1").fetchall():
    tables[f"sales/region={region}/"] = rows
os.makedirs(os.path.join(lake, "sales-private"))
con.execute(f"""COPY (SELECT c_custkey AS customer_key, c_name AS name, c_address AS address,
                             c_phone AS phone, c_acctbal AS balance FROM customer)
                TO '{os.path.join(lake, 'sales-private', 'customers.parquet')}' (FORMAT parquet)""")
tables["sales-private/"] = con.execute("SELECT count(*) FROM customer").fetchone()[0]
print(json.dumps(tables))
