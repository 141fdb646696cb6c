-- Runs once when the postgres container initialises: a separate database for the B2B
-- warehouse next to Airflow's metadata database (both owned by the compose user).
CREATE DATABASE b2b;
