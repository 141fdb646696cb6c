#!/usr/bin/env bash
# airflow-init (runs once, as root, before the Airflow services): migrate Airflow's metadata DB
# and the warehouse, check the catalogue, import the demo schools' connections into the metadata
# DB (so the UI lists them: Admin > Connections), load the demo LA's child records, and give the
# airflow user the b2b-home volume. For a real LA: drop the connections/core lines and define the
# schools' connections in a secrets backend (docs/connections.md).
set -euo pipefail
uid="${AIRFLOW_UID:-50000}"
mkdir -p /opt/airflow/b2b /opt/airflow/logs
chown -R "${uid}:0" /opt/airflow/b2b /opt/airflow/logs
airflow db migrate
b2b db upgrade --url "${B2B_DATABASE_URL}"
b2b db roles --url "${B2B_DATABASE_URL}"   # F41: b2b_pipeline / analyst / officer / ui with the .env passwords
b2b config check --write-dags   # the catalogue's DAG files in ${B2B_DAGS_FOLDER} (one per bucket of bases)
conns=/opt/airflow/b2b/connections.json
( umask 077; b2b-simulator connections --format json --base-url "${SIMULATOR_URL}" > "${conns}" )
airflow connections import --overwrite "${conns}"
rm -f "${conns}"
# the LA's own files (children with their MIS GUID links, LLPG gazetteer), loaded as an LA's would be
b2b-simulator la-files --out /opt/airflow/b2b/inbound/la
b2b core load /opt/airflow/b2b/inbound/la/children.csv
b2b core load --gazetteer /opt/airflow/b2b/inbound/la/gazetteer.csv
b2b core load --adults /opt/airflow/b2b/inbound/la/adults.csv
rm -f /opt/airflow/b2b/inbound/la/*.csv
chown -R "${uid}:0" /opt/airflow/b2b /opt/airflow/logs
echo "airflow-init done; users and roles: ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS};" \
     "passwords are generated on the api-server's first start into ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
