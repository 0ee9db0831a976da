// The views API (`/_api` on the gateway's hostname) as OpenAPI 3.1: its paths, written here;
// its schemas are the types in src/*.type.js, the ones the sidecar is generated from.
//
// `cargo xtask schemas` combines the two into openapi.json (components.schemas are the
// bundled types with their definitions, refs rewritten to #/components/schemas/<Name>),
// which the sidecar serves at GET /_api/openapi.json.

const schema = (name) => ({ $ref: `#/components/schemas/${name}` });

const json = (description, name) => ({
  description,
  content: { 'application/json': { schema: schema(name) } },
});

// Every error is an ApiError; `error` names the machine-readable cause.
const failure = (description) => json(description, 'ApiError');

const unauthenticated = failure(
  'No valid credentials: no token or session, or one that is expired, tampered with or meant for ' +
    'another audience (`unauthenticated`). API clients get this, never a redirect to sign in.',
);
const unavailable = {
  ...failure('Kubernetes cannot be reached right now (`kubernetes_unavailable`); retry after `Retry-After` seconds.'),
  headers: { 'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer' } } },
};

const lakeUnavailable = {
  ...failure('The lake did not answer the gateway in time (`lake_unavailable`); retry after `Retry-After` seconds.'),
  headers: unavailable.headers,
};

const bucket = {
  name: 'bucket',
  in: 'path',
  required: true,
  description: 'The bucket.',
  schema: schema('BucketName'),
};

const viewName = {
  name: 'name',
  in: 'path',
  required: true,
  description: 'The view\'s name.',
  schema: schema('ViewName'),
};

export default {
  openapi: '3.1.0',
  info: {
    title: 'views gateway API',
    version: '1',
    summary: 'Create, list, share and delete views: on-demand DuckDB workspaces over subsets of a data lake.',
    description:
      'Served under `/_api` on the gateway\'s hostname. Every call needs an identity: a bearer token from ' +
      'the organisation\'s OpenID Connect provider or a Kubernetes ServiceAccount token, or the session ' +
      'cookie of a signed-in browser. People see and manage the views they own or that are shared with ' +
      'them; members of an admin group see all. Errors are `ApiError` JSON with a fitting status, and a ' +
      'refused request changes nothing.',
    license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
  },
  servers: [{ url: '/', description: 'The gateway\'s hostname.' }],
  security: [{ bearer: [] }, { session: [] }],
  tags: [
    { name: 'views', description: 'Views and who may open them.' },
    { name: 'identity', description: 'Who the caller is and what they may read.' },
    { name: 'lake', description: 'Browsing and previewing the lake with the caller\'s entitlements, to build views.' },
    { name: 'meta', description: 'This document and the gateway\'s readiness.' },
  ],
  paths: {
    '/_api/views': {
      get: {
        tags: ['views'],
        operationId: 'listViews',
        summary: 'The views the caller may see',
        description: 'Owned by the caller or shared with them (or their groups); every view for an admin.',
        responses: {
          200: json('The views, by name.', 'ViewList'),
          401: unauthenticated,
        },
      },
      post: {
        tags: ['views'],
        operationId: 'createView',
        summary: 'Create a view',
        description:
          'Creates the view (its Kubernetes Service); nothing starts until its host is first requested. ' +
          'The caller becomes its owner. Creating the same view again with the same spec answers 201 ' +
          'again; a different spec under the same name is a conflict. The answer comes once this ' +
          'gateway\'s Envoy has the view\'s route, so its host can be opened at once.',
        requestBody: {
          required: true,
          content: { 'application/json': { schema: schema('ViewRequest') } },
        },
        responses: {
          201: json('The view as created (status `cold`).', 'View'),
          400: failure(
            'Not JSON, or not a ViewRequest (`invalid_request`, or `invalid_name`; `details.problems` lists each ' +
              'problem, `details.field` points at the first).',
          ),
          401: unauthenticated,
          403: failure(
            'The caller, or someone it is shared with, may not read a subset they asked for (`not_entitled`, naming ' +
              'the subset in `details`, and `details.field`: `/subsets/<i>/prefixes` or `/sharedWith/users|groups`), ' +
              'or may not create a view for another owner (`forbidden`).',
          ),
          409: failure(
            'A view of that name exists with another spec, or is being deleted (`conflict`, `details.field`: `/name`).',
          ),
          413: failure('The body is larger than 64 KiB (`payload_too_large`).'),
          415: failure('The body is not `application/json` (`unsupported_media_type`).'),
          422: failure(
            'A valid request the gateway refuses: a reserved name (`reserved_name`), or limits such as a table ' +
              'outside its subset\'s prefixes (`unprocessable`); `details.field` points at the field.',
          ),
          429: failure('The namespace\'s quota is used up (`quota_exceeded`).'),
          503: unavailable,
        },
      },
    },
    '/_api/views/{name}': {
      parameters: [viewName],
      get: {
        tags: ['views'],
        operationId: 'getView',
        summary: 'One view and its live status',
        responses: {
          200: json('The view.', 'View'),
          401: unauthenticated,
          404: failure(
            'No such view, or one the caller may not see (`not_found`): the two are not told apart, so a ' +
              'name reveals nothing about other people\'s views.',
          ),
          422: failure('Admins: the view\'s Service exists but its spec cannot be read (`unprocessable`, the problem in `details.problem`).'),
        },
      },
      delete: {
        tags: ['views'],
        operationId: 'deleteView',
        summary: 'Delete a view',
        description: 'Its owner or an admin; a running workload is stopped and everything it had is garbage-collected.',
        responses: {
          204: { description: 'Deleted (or being deleted).' },
          401: unauthenticated,
          403: failure('Shared with the caller, but not theirs to delete (`forbidden`).'),
          404: failure('No such view, or one the caller may not see (`not_found`).'),
          503: unavailable,
        },
      },
    },
    '/_api/views/{name}/stop': {
      parameters: [viewName],
      post: {
        tags: ['views'],
        operationId: 'stopView',
        summary: 'End a view\'s current run now',
        description:
          'Its owner or an admin. The run\'s Job, pods and lake keys go; the view stays and starts again on ' +
          'its next request. A view that is not running answers the same (idempotent).',
        responses: {
          200: json('The view after the stop (status `cold`, or `failed` if its last start failed).', 'View'),
          401: unauthenticated,
          403: failure('Shared with the caller, but not theirs to stop (`forbidden`).'),
          404: failure('No such view, or one the caller may not see (`not_found`).'),
          503: unavailable,
        },
      },
    },
    '/_api/views/{name}/restart': {
      parameters: [viewName],
      post: {
        tags: ['views'],
        operationId: 'restartView',
        summary: 'Replace a view\'s run with a fresh one, now',
        description:
          'Its owner or an admin, entitled to the view\'s data as for any start. The running run\'s Job, pods ' +
          'and lake keys go and a new run starts at once (not on the next request: whoever restarts means to ' +
          'use it, and the start overlaps their way back to it). A view not running is started; a run still ' +
          'starting is already fresh, and the call joins it, so a repeated call restarts once.',
        responses: {
          202: json('The new run is under way (status `starting`, or `ready` if it was quick).', 'View'),
          401: unauthenticated,
          403: failure(
            'Shared with the caller, but not theirs to restart (`forbidden`), or the caller is not (or no longer) ' +
              'entitled to the view\'s data (`not_entitled`), or a browser sent it from a page of another host.',
          ),
          404: failure('No such view, or one the caller may not see (`not_found`).'),
          502: failure('The new run cannot start (`view_failed`, the reason in `details.reason`).'),
          503: unavailable,
        },
      },
    },
    '/_api/views/{name}/extend': {
      parameters: [viewName],
      post: {
        tags: ['views'],
        operationId: 'extendView',
        summary: 'Move the current run\'s deadline later',
        description:
          'Anyone who may open the view (its owner, those it is shared with) and admins. The run\'s deadline ' +
          'moves `seconds` later, up to its start plus the operator\'s cap on one run (`status.maxDeadline`); ' +
          'the idle stop still applies. Not idempotent: each call adds its seconds, within the cap.',
        requestBody: {
          required: true,
          content: { 'application/json': { schema: schema('DeadlineExtension') } },
        },
        responses: {
          200: json('The view with its run\'s new deadline (`status.deadline`).', 'View'),
          400: failure('Not JSON, or not a DeadlineExtension (`invalid_request`).'),
          401: unauthenticated,
          403: failure('A browser sent it from a page of another host (cross-site request refused, `forbidden`).'),
          404: failure('No such view, or one the caller may not see (`not_found`).'),
          409: failure('The view is not running: there is no run to extend (`conflict`).'),
          415: failure('The body is not `application/json` (`unsupported_media_type`).'),
          422: failure(
            'The run would last longer than the operator allows (`over_cap`; `details.allowedSeconds` is what ' +
              'may still be added, `details.maxDeadline` the latest deadline).',
          ),
          503: unavailable,
        },
      },
    },
    '/_api/views/{name}/shares': {
      parameters: [viewName],
      put: {
        tags: ['views'],
        operationId: 'shareView',
        summary: 'Set who else may open a view',
        description:
          'Replaces the view\'s shares (its owner or an admin). Sharing is checked against the data ' +
          'entitlements: everyone shared with must be entitled to the view\'s subsets.',
        requestBody: {
          required: true,
          content: { 'application/json': { schema: schema('Shares') } },
        },
        responses: {
          200: json('The view with its new shares.', 'View'),
          400: failure('Not JSON, or not a Shares object (`invalid_request`).'),
          401: unauthenticated,
          403: failure('Not the caller\'s to share (`forbidden`), or someone shared with is not entitled (`not_entitled`).'),
          404: failure('No such view, or one the caller may not see (`not_found`).'),
          409: failure('The view changed meanwhile or is being deleted (`conflict`).'),
          503: unavailable,
        },
      },
    },
    '/_api/me': {
      get: {
        tags: ['identity'],
        operationId: 'me',
        summary: 'Who the caller is and what they may read',
        responses: {
          200: json('The caller, their groups and grants.', 'Me'),
          401: unauthenticated,
          404: failure('Sign-in is off: there is no caller to describe (`not_found`).'),
        },
      },
    },
    '/_api/lake': {
      get: {
        tags: ['lake'],
        operationId: 'lakeRoots',
        summary: 'Where the caller may browse the lake',
        description:
          'The buckets and prefixes the caller is entitled to read (merged grants), the places to start ' +
          'browsing from; with sign-in off, every bucket the gateway\'s lake keys list.',
        responses: {
          200: json('The roots.', 'LakeRoots'),
          401: unauthenticated,
          404: failure('The gateway has no lake configured (`not_found`).'),
          503: lakeUnavailable,
        },
      },
    },
    '/_api/lake/{bucket}': {
      parameters: [bucket],
      get: {
        tags: ['lake'],
        operationId: 'listLake',
        summary: 'One level of the lake under a prefix',
        description:
          'The sub-prefixes and objects directly under `prefix`, one page in key order, listed by the gateway ' +
          'with its own lake keys (never given to the browser). The caller must be entitled to read every key ' +
          'under `prefix`: this is decided on the request alone, before the lake is asked, so a refusal says ' +
          'nothing about what the lake holds.',
        parameters: [
          {
            name: 'prefix',
            in: 'query',
            description: 'A key prefix ending with "/" (segments neither empty, "." nor ".."), or "" (the default) for the whole bucket.',
            schema: { type: 'string', maxLength: 1024 },
          },
          {
            name: 'after',
            in: 'query',
            description: 'The `next` of the previous page.',
            schema: { type: 'string', maxLength: 1024 },
          },
          {
            name: 'limit',
            in: 'query',
            description: 'At most this many entries (prefixes and objects); 1000 by default and at most.',
            schema: { type: 'integer', minimum: 1, maximum: 1000 },
          },
        ],
        responses: {
          200: json('One page of the listing.', 'LakeListing'),
          400: failure('A bad bucket, prefix, `after` or `limit` (`invalid_request`, the parameter in `details.parameter`).'),
          401: unauthenticated,
          403: failure('The caller may not read under `prefix` (`not_entitled`, naming bucket and prefix in `details`).'),
          404: failure('No such bucket, or no lake configured (`not_found`).'),
          503: lakeUnavailable,
        },
      },
    },
    '/_api/lake/{bucket}/preview': {
      parameters: [bucket],
      get: {
        tags: ['lake'],
        operationId: 'previewTable',
        summary: 'The first rows of a table path',
        description:
          'Reads the object a table path names (or the first key, in key order, its glob matches) as a view ' +
          'would, within bounds: at most 100 rows and 50 columns shown, 32 MiB read of a Parquet object (its ' +
          'footer and the pages the first rows need) or 1 MiB of a CSV or JSON one, 10 seconds. Entitlements ' +
          'as for listing, on the path\'s directory (its part before the last "/" ahead of any glob character).',
        parameters: [
          {
            name: 'path',
            in: 'query',
            required: true,
            description: 'A table path as in a view\'s `tables`: a key or a glob.',
            schema: schema('TablePath'),
          },
          {
            name: 'format',
            in: 'query',
            required: true,
            description: 'How to read it.',
            schema: schema('TableFormat'),
          },
          {
            name: 'rows',
            in: 'query',
            description: 'How many rows: 20 by default, at most 100.',
            schema: { type: 'integer', minimum: 1, maximum: 100 },
          },
        ],
        responses: {
          200: json('The first rows.', 'TablePreview'),
          400: failure('A bad bucket, path, format or rows (`invalid_request`, the parameter in `details.parameter`).'),
          401: unauthenticated,
          403: failure('The caller may not read the path\'s directory (`not_entitled`, naming bucket and prefix in `details`).'),
          404: failure('No such bucket or key, or no key matches the glob (`not_found`).'),
          422: failure(
            'The object cannot be previewed in that format (`unprocessable`; `details.reason`: `not_parquet`, ' +
              '`not_csv`, `not_json`, `not_text`, `row_too_long` or `too_large`).',
          ),
          503: lakeUnavailable,
        },
      },
    },
    '/_api/readyz': {
      get: {
        tags: ['meta'],
        operationId: 'readyz',
        summary: 'Whether this gateway replica can serve',
        description:
          'For Envoy\'s readiness probe: ready once the sidecar\'s view index has synced and while it is not ' +
          'draining. Parts that are degraded (Kubernetes unreachable, invalid entitlements) are listed ' +
          'without failing it. Needs no identity.',
        security: [],
        responses: {
          200: { description: 'Ready.', content: { 'application/json': { schema: { type: 'object' } } } },
          503: { description: 'Not synced yet, or draining.', content: { 'application/json': { schema: { type: 'object' } } } },
        },
      },
    },
    '/_api/openapi.json': {
      get: {
        tags: ['meta'],
        operationId: 'openapi',
        summary: 'This document',
        responses: {
          200: {
            description: 'The OpenAPI 3.1 description of the views API.',
            content: { 'application/json': { schema: { type: 'object' } } },
          },
          401: unauthenticated,
        },
      },
    },
  },
  components: {
    securitySchemes: {
      bearer: {
        type: 'http',
        scheme: 'bearer',
        bearerFormat: 'JWT',
        description:
          'An access token from the organisation\'s OpenID Connect provider (audience: the gateway\'s), ' +
          'or a Kubernetes ServiceAccount token with the gateway\'s audience.',
      },
      session: {
        type: 'apiKey',
        in: 'cookie',
        name: '__Host-views-token',
        description:
          'A signed-in browser\'s session (with its `__Host-views-hmac` and `__Host-views-expires` ' +
          'companions), set by the sign-in flow on the gateway\'s own host: host-only, so no view host ' +
          'can read or plant it.',
      },
    },
  },
};
