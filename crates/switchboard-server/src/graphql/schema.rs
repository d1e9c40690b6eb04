//! The schema, built once per server with the configured depth and complexity limits, and
//! a second, introspection-only schema that GraphiQL and code generators can use.
//!
//! Standard introspection queries (GraphiQL's among them) nest `ofType` nine levels deep,
//! deeper than any sensible limit for data queries, but those chains are thin: each level is
//! one object, not a list. A request whose every root field is an introspection field, and
//! whose depth *not counting `ofType`* is within the configured limit, goes to a schema
//! that answers only introspection under a looser depth limit. Everything else meets the
//! configured limits, so a query cannot widen what it fetches by calling itself
//! introspection.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{Request, Schema, ServerError, ServerResult, ValidationResult, Variables};

use super::error::{PARSE_FAILED, VALIDATION_FAILED};
use super::mutation::MutationRoot;
use super::query::QueryRoot;
use super::subscription::SubscriptionRoot;
use crate::state::AppState;

/// The Switchboard GraphQL schema.
pub(super) type SwitchboardSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Depth an introspection query may reach counting `ofType`: a type reference nested nine
/// `ofType`s deep under `__schema { types { fields { args { type … } } } }`, with room.
const INTROSPECTION_DEPTH: usize = 20;
/// Complexity an introspection query may reach (GraphiQL's is a few hundred).
const INTROSPECTION_COMPLEXITY: usize = 1000;

/// Both schemas; cheap to clone.
#[derive(Clone)]
pub(super) struct Schemas {
    /// Queries, mutations and subscriptions, under the configured limits.
    pub(super) main: SwitchboardSchema,
    /// Introspection only (everything else resolves to null), under limits that fit
    /// standard introspection queries.
    introspection: SwitchboardSchema,
    /// The configured depth limit, which introspection meets when `ofType` is not counted.
    max_depth: usize,
}

impl Schemas {
    /// Builds both over `state`.
    pub(super) fn new(state: &AppState) -> Schemas {
        let limits = &state.config.limits;
        let main = build(state)
            .limit_depth(limits.max_graphql_depth)
            .limit_complexity(limits.max_graphql_complexity);
        let introspection = build(state)
            .introspection_only()
            .limit_depth(limits.max_graphql_depth.max(INTROSPECTION_DEPTH))
            .limit_complexity(limits.max_graphql_complexity.max(INTROSPECTION_COMPLEXITY));
        Schemas {
            main: main.finish(),
            introspection: introspection.finish(),
            max_depth: limits.max_graphql_depth,
        }
    }

    /// The schema that runs `request`: the introspection schema for a thin introspection
    /// query (see the module docs), else the main one. Parses the query (the parse is kept
    /// in the request, so it is not parsed again).
    pub(super) fn for_request(&self, request: &mut Request) -> &SwitchboardSchema {
        // Cheap test first: most requests never mention introspection.
        if !request.query.contains("__schema") && !request.query.contains("__type") {
            return &self.main;
        }
        let name = request.operation_name.clone();
        match request.parsed_query() {
            Ok(doc) => match introspection_depth(doc, name.as_deref()) {
                Some(depth) if depth <= self.max_depth => &self.introspection,
                _ => &self.main,
            },
            Err(_) => &self.main,
        }
    }
}

fn build(state: &AppState) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).data(state.clone()).extension(ErrorCodes)
}

/// If the operation `name` picks (or the only one) is a query of introspection fields alone,
/// its depth not counting `ofType` fields. Fragment spreads at the root count as not
/// introspection.
fn introspection_depth(doc: &ExecutableDocument, name: Option<&str>) -> Option<usize> {
    let op = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let root = &op.node.selection_set.node;
    let introspection = op.node.ty == OperationType::Query
        && root.items.iter().all(|s| match &s.node {
            Selection::Field(f) => f.node.name.node.starts_with("__"),
            _ => false,
        });
    introspection.then(|| ThinDepth { doc, fragments: HashMap::new() }.of(root))
}

/// Depth of selections where `ofType` adds no level. Each fragment is measured once; a
/// fragment that spreads itself measures as infinitely deep (validation rejects it anyway).
struct ThinDepth<'a> {
    doc: &'a ExecutableDocument,
    /// Measured fragments; `None` while one is being measured.
    fragments: HashMap<&'a str, Option<usize>>,
}

impl<'a> ThinDepth<'a> {
    fn of(&mut self, set: &'a SelectionSet) -> usize {
        let mut depth = 0;
        for s in &set.items {
            let d = match &s.node {
                Selection::Field(f) => {
                    let inner = self.of(&f.node.selection_set.node);
                    if f.node.name.node == "ofType" { inner } else { inner.saturating_add(1) }
                }
                Selection::InlineFragment(i) => self.of(&i.node.selection_set.node),
                Selection::FragmentSpread(spread) => self.fragment(spread.node.fragment_name.node.as_str()),
            };
            depth = depth.max(d);
        }
        depth
    }

    fn fragment(&mut self, name: &'a str) -> usize {
        match self.fragments.get(name) {
            Some(Some(depth)) => return *depth,
            Some(None) => return usize::MAX,
            None => {}
        }
        let Some(f) = self.doc.fragments.get(name) else { return 0 };
        self.fragments.insert(name, None);
        let depth = self.of(&f.node.selection_set.node);
        self.fragments.insert(name, Some(depth));
        depth
    }
}

/// Gives parse and validation errors (including too deep and too complex) an
/// `extensions.code`, as resolver errors have.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|e| with_code(e, PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx)
            .await
            .map_err(|errors| errors.into_iter().map(|e| with_code(e, VALIDATION_FAILED)).collect())
    }
}

fn with_code(mut e: ServerError, code: &'static str) -> ServerError {
    let ext = e.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
        ext.set("status", 400);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_reads_as_documented() {
        let sdl = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).finish().sdl();
        println!("{sdl}");
        for expected in [
            "type Query",
            "topics: [Topic!]!",
            "type Mutation",
            "publish(topic: String!, events: [EventInput!]!, deliverAt: String): [PublishReceipt!]!",
            "type Subscription",
            "tail(topic: String!, fromEnd: Boolean! = true): Message!",
            "input SeekTarget @oneOf",
        ] {
            assert!(sdl.contains(expected), "{expected} missing from\n{sdl}");
        }
    }

    fn depth(query: &str, name: Option<&str>) -> Option<usize> {
        let doc = async_graphql::parser::parse_query(query).unwrap();
        introspection_depth(&doc, name)
    }

    #[test]
    fn only_pure_introspection_queries_get_the_introspection_schema() {
        assert_eq!(depth("query IntrospectionQuery { __schema { types { name } } }", None), Some(3));
        assert_eq!(depth("{ __type(name: \"Topic\") { name } __typename }", None), Some(2));
        assert_eq!(depth("{ __schema { types { name } } topics { name } }", None), None);
        assert_eq!(depth("mutation { __typename }", None), None);
        assert_eq!(depth("{ ...F } fragment F on Query { __schema { types { name } } }", None), None);
        let two = "query A { __schema { types { name } } } query B { topics { name } }";
        assert_eq!(depth(two, Some("A")), Some(3));
        assert_eq!(depth(two, Some("B")), None);
        assert_eq!(depth(two, None), None);
        assert_eq!(depth(two, Some("C")), None);
    }

    #[test]
    fn of_type_chains_add_no_depth_but_everything_else_does() {
        let chain =
            "{ __type(name: \"Topic\") { fields { type { ofType { ofType { ofType { name } } } } } } }";
        assert_eq!(depth(chain, None), Some(4));
        let wide = "{ __schema { types { fields { type { ofType { fields { type { ofType { fields { name } } } } } } } } } }";
        assert_eq!(depth(wide, None), Some(8));
        let fragments = "{ __schema { types { ...T } } } fragment T on __Type { ...R fields { ...R } } \
                         fragment R on __Type { name ofType { ...S } } fragment S on __Type { kind }";
        assert_eq!(depth(fragments, None), Some(4));
        let cycle = "{ __schema { types { ...A } } } fragment A on __Type { ofType { ...A } }";
        assert_eq!(depth(cycle, None), Some(usize::MAX));
    }
}
