//! The query root: topics the caller may see, and from there partitions, subscriptions
//! with their counts and rates, and messages.

use async_graphql::{Context, Object};

use super::access::{check_visible, may_see, principal, state};
use super::error::{GqlResult, topic_name};
use super::service_graph::{GraphWindow, ServiceGraph};
use super::types::Topic;

pub(super) struct QueryRoot;

/// Reads: nothing here changes the broker.
#[Object(name = "Query")]
impl QueryRoot {
    /// Every topic the caller may publish to, consume from or administer, by name.
    async fn topics(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Topic>> {
        let p = principal(ctx)?;
        Ok(state(ctx)?
            .broker
            .topics()
            .into_iter()
            .filter(|t| may_see(p, t.name.as_str()))
            .map(Topic)
            .collect())
    }

    /// One topic. `FORBIDDEN` if the caller may do nothing with it (whether it exists or
    /// not), `NOT_FOUND` if it does not exist.
    async fn topic(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Topic> {
        let name = topic_name(&name)?;
        check_visible(principal(ctx)?, &name)?;
        Ok(Topic(state(ctx)?.broker.topic_info(&name).gql()?))
    }

    /// The service graph over a window: services, topics and subscriptions, every sync and
    /// async edge with its rates and latencies, and what is congested. Needs `admin` on
    /// every topic.
    async fn service_graph(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] window: GraphWindow,
    ) -> async_graphql::Result<ServiceGraph> {
        super::service_graph::query(ctx, window)
    }
}
