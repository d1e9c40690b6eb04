//! The projection bookkeeping tables: which generation of each projection readers see and
//! which one is being rebuilt, and each generation's checkpoint. The same SQL on SQLite and
//! PostgreSQL, except that PostgreSQL locks the checkpoint row it is about to move (SQLite's
//! `BEGIN IMMEDIATE` already holds the whole database).

use futures::future::BoxFuture;

use crate::eventstore::EventStoreDatabase;

/// `(live generation, generation being rebuilt)`.
#[doc(hidden)]
pub(crate) type Generations = (i64, Option<i64>);

/// A database projections can live in (SQLite or PostgreSQL; sealed with the outbox's).
pub trait ProjectionDatabase: EventStoreDatabase {
    #[doc(hidden)]
    fn create_projection_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;
    /// `(live generation, generation being rebuilt)`.
    #[doc(hidden)]
    fn projection_state<'c>(
        conn: &'c mut Self::Connection,
        name: &'c str,
    ) -> BoxFuture<'c, Result<Option<Generations>, sqlx::Error>>;
    #[doc(hidden)]
    fn set_projection_state<'c>(
        conn: &'c mut Self::Connection,
        name: &'c str,
        live: i64,
        building: Option<i64>,
        now: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
    /// The checkpoint of a generation in one source partition (0 for the event store's
    /// feed), its row locked until the transaction ends.
    #[doc(hidden)]
    fn lock_checkpoint<'c>(
        conn: &'c mut Self::Connection,
        name: &'c str,
        generation: i64,
        partition: i64,
    ) -> BoxFuture<'c, Result<Option<i64>, sqlx::Error>>;
    #[doc(hidden)]
    fn set_checkpoint<'c>(
        conn: &'c mut Self::Connection,
        name: &'c str,
        generation: i64,
        partition: i64,
        position: i64,
        now: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn delete_checkpoint<'c>(
        conn: &'c mut Self::Connection,
        name: &'c str,
        generation: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
    /// Runs DDL the projection module wrote from checked names.
    #[doc(hidden)]
    fn execute_ddl<'c>(conn: &'c mut Self::Connection, sql: String)
    -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

macro_rules! projection_database {
    ($db:ty, $feature:literal, $lock:literal) => {
        #[cfg(feature = $feature)]
        impl ProjectionDatabase for $db {
            fn create_projection_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = pool.begin().await?;
                    for statement in [
                        "CREATE TABLE IF NOT EXISTS switchboard_projections (
                            name TEXT PRIMARY KEY,
                            live_generation BIGINT NOT NULL,
                            building_generation BIGINT,
                            updated_at BIGINT NOT NULL
                        )",
                        "CREATE TABLE IF NOT EXISTS switchboard_projection_checkpoints (
                            name TEXT NOT NULL,
                            generation BIGINT NOT NULL,
                            source_partition BIGINT NOT NULL,
                            position BIGINT NOT NULL,
                            updated_at BIGINT NOT NULL,
                            PRIMARY KEY (name, generation, source_partition)
                        )",
                    ] {
                        sqlx::query(statement).execute(&mut *tx).await?;
                    }
                    tx.commit().await
                })
            }

            fn projection_state<'c>(
                conn: &'c mut Self::Connection,
                name: &'c str,
            ) -> BoxFuture<'c, Result<Option<Generations>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_as(concat!(
                        "SELECT live_generation, building_generation FROM switchboard_projections WHERE name = $1",
                        $lock
                    ))
                    .bind(name)
                    .fetch_optional(conn)
                    .await
                })
            }

            fn set_projection_state<'c>(
                conn: &'c mut Self::Connection,
                name: &'c str,
                live: i64,
                building: Option<i64>,
                now: i64,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO switchboard_projections (name, live_generation, building_generation, updated_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (name) DO UPDATE SET live_generation = excluded.live_generation,
                             building_generation = excluded.building_generation, updated_at = excluded.updated_at",
                    )
                    .bind(name)
                    .bind(live)
                    .bind(building)
                    .bind(now)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            }

            fn lock_checkpoint<'c>(
                conn: &'c mut Self::Connection,
                name: &'c str,
                generation: i64,
                partition: i64,
            ) -> BoxFuture<'c, Result<Option<i64>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_scalar(concat!(
                        "SELECT position FROM switchboard_projection_checkpoints
                         WHERE name = $1 AND generation = $2 AND source_partition = $3",
                        $lock
                    ))
                    .bind(name)
                    .bind(generation)
                    .bind(partition)
                    .fetch_optional(conn)
                    .await
                })
            }

            fn set_checkpoint<'c>(
                conn: &'c mut Self::Connection,
                name: &'c str,
                generation: i64,
                partition: i64,
                position: i64,
                now: i64,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO switchboard_projection_checkpoints (name, generation, source_partition, position, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (name, generation, source_partition) DO UPDATE SET position = excluded.position,
                             updated_at = excluded.updated_at",
                    )
                    .bind(name)
                    .bind(generation)
                    .bind(partition)
                    .bind(position)
                    .bind(now)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            }

            fn delete_checkpoint<'c>(
                conn: &'c mut Self::Connection,
                name: &'c str,
                generation: i64,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM switchboard_projection_checkpoints WHERE name = $1 AND generation = $2")
                        .bind(name)
                        .bind(generation)
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            }

            fn execute_ddl<'c>(conn: &'c mut Self::Connection, sql: String) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await?;
                    Ok(())
                })
            }
        }
    };
}

projection_database!(sqlx::Sqlite, "sqlite", "");
projection_database!(sqlx::Postgres, "postgres", " FOR UPDATE");
