//! Check runs and their verdicts: a run is written when it starts and finished once,
//! each trial's verdict as it is reached; read back per run, per persona and goal (the
//! dashboard's grid), and rolled up per goal and simulator/judge version (the QA report).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, with_pool, with_writer};
use crate::model::goal::{CheckResult, CheckRun, CriterionResult, Outcome, RunStatus, Verdict};
use crate::model::tick::Trigger;
use crate::time::now;

const RUN_VERDICTS: &str = "SELECT id, tenant_id, run_id, goal, persona_id, tick_id, trial, outcome, checks, criteria, simulator, judge, seconds, created_at
     FROM persona_verdicts WHERE run_id = $1 ORDER BY persona_id, goal, trial";

const TICK_VERDICTS: &str = "SELECT id, tenant_id, run_id, goal, persona_id, tick_id, trial, outcome, checks, criteria, simulator, judge, seconds, created_at
     FROM persona_verdicts WHERE tenant_id = $1 AND tick_id = $2 ORDER BY goal";

const RECENT_VERDICTS: &str = "SELECT id, tenant_id, run_id, goal, persona_id, tick_id, trial, outcome, checks, criteria, simulator, judge, seconds, created_at
     FROM persona_verdicts
     WHERE tenant_id = $1 AND ($2 IS NULL OR persona_id = $2) AND ($3 IS NULL OR goal = $3)
     ORDER BY created_at DESC, trial DESC LIMIT $4";

#[derive(sqlx::FromRow)]
struct VerdictRow {
    id: Uuid,
    tenant_id: Uuid,
    run_id: Uuid,
    goal: String,
    persona_id: Uuid,
    tick_id: Uuid,
    trial: i32,
    outcome: Outcome,
    checks: Json<Vec<CheckResult>>,
    criteria: Json<Vec<CriterionResult>>,
    simulator: String,
    judge: Option<String>,
    seconds: f64,
    created_at: DateTime<Utc>,
}

impl From<VerdictRow> for Verdict {
    fn from(row: VerdictRow) -> Self {
        Verdict {
            id: row.id,
            tenant_id: row.tenant_id,
            run_id: row.run_id,
            goal: row.goal,
            persona_id: row.persona_id,
            tick_id: row.tick_id,
            trial: row.trial,
            outcome: row.outcome,
            checks: row.checks.0,
            criteria: row.criteria.0,
            simulator: row.simulator,
            judge: row.judge,
            seconds: row.seconds,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    tenant_id: Uuid,
    trigger: Trigger,
    status: RunStatus,
    trials: i32,
    min_pass: i32,
    goals: Json<Vec<String>>,
    personas: Json<Vec<String>>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<RunRow> for CheckRun {
    fn from(row: RunRow) -> Self {
        CheckRun {
            id: row.id,
            tenant_id: row.tenant_id,
            trigger: row.trigger,
            status: row.status,
            trials: row.trials,
            min_pass: row.min_pass,
            goals: row.goals.0,
            personas: row.personas.0,
            error: row.error,
            created_at: row.created_at,
            finished_at: row.finished_at,
        }
    }
}

/// A goal's trials over a window, within one simulator and judge version.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GoalPassRate {
    pub goal: String,
    pub simulator: String,
    pub judge: Option<String>,
    pub trials: i64,
    pub passed: i64,
}

impl Store {
    /// Records a check run as it starts.
    pub async fn insert_check_run(&self, run: &CheckRun) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_check_runs (id, tenant_id, trigger, status, trials, min_pass, goals, personas,
                    error, created_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(run.id)
            .bind(run.tenant_id)
            .bind(run.trigger)
            .bind(run.status)
            .bind(run.trials)
            .bind(run.min_pass)
            .bind(Json(&run.goals))
            .bind(Json(&run.personas))
            .bind(run.error.as_deref())
            .bind(run.created_at)
            .bind(run.finished_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends a running check run: `done`, or `failed` with why.
    pub async fn finish_check_run(&self, id: Uuid, status: RunStatus, error: Option<&str>) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query(
                "UPDATE persona_check_runs SET status = $2, error = $3, finished_at = $4
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(status)
            .bind(error)
            .bind(now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn check_run(&self, tenant: Uuid, id: Uuid) -> Result<Option<CheckRun>> {
        let row: Option<RunRow> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, tenant_id, trigger, status, trials, min_pass, goals, personas, error, created_at, finished_at
                 FROM persona_check_runs WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(Into::into))
    }

    pub async fn record_verdict(&self, verdict: &Verdict) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_verdicts (id, tenant_id, run_id, goal, persona_id, tick_id, trial, outcome,
                    checks, criteria, simulator, judge, seconds, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(verdict.id)
            .bind(verdict.tenant_id)
            .bind(verdict.run_id)
            .bind(&verdict.goal)
            .bind(verdict.persona_id)
            .bind(verdict.tick_id)
            .bind(verdict.trial)
            .bind(verdict.outcome)
            .bind(Json(&verdict.checks))
            .bind(Json(&verdict.criteria))
            .bind(&verdict.simulator)
            .bind(verdict.judge.as_deref())
            .bind(verdict.seconds)
            .bind(verdict.created_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The verdicts of one (check) tick of a tenant.
    pub async fn tick_verdicts(&self, tenant: Uuid, tick_id: Uuid) -> Result<Vec<Verdict>> {
        let rows: Vec<VerdictRow> = with_pool!(self, pool => {
            sqlx::query_as(TICK_VERDICTS).bind(tenant).bind(tick_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// A run's verdicts, by persona, goal and trial.
    pub async fn run_verdicts(&self, run_id: Uuid) -> Result<Vec<Verdict>> {
        let rows: Vec<VerdictRow> = with_pool!(self, pool => {
            sqlx::query_as(RUN_VERDICTS).bind(run_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The newest verdicts of a tenant, optionally of one persona and one goal.
    pub async fn verdicts(
        &self,
        tenant: Uuid,
        persona: Option<Uuid>,
        goal: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Verdict>> {
        let rows: Vec<VerdictRow> = with_pool!(self, pool => {
            sqlx::query_as(RECENT_VERDICTS).bind(tenant).bind(persona).bind(goal).bind(limit).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Pass rates per goal since `since`, one row per simulator and judge version: a model
    /// switch starts a new row, never a regression of the old one.
    pub async fn goal_pass_rates(
        &self,
        tenant: Uuid,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<GoalPassRate>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT goal, simulator, judge, COUNT(*) AS trials,
                        SUM(CASE WHEN outcome = 'pass' THEN 1 ELSE 0 END) AS passed
                 FROM persona_verdicts WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
                 GROUP BY goal, simulator, judge ORDER BY goal, simulator, judge",
            )
            .bind(tenant)
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }
}
