// A view as the API returns it (GET /_api/views, GET /_api/views/<name>, POST /_api/views).

import Route from './Route.type.js';
import Subset from './Subset.type.js';
import ViewRequest from './ViewRequest.type.js';

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:View',
  title: 'View',
  description:
    'A view: a named, on-demand DuckDB workload over subsets of the data lake, and its current state. ' +
    'Everything here is read from the view\'s Service and its Job, pods and endpoints.',
  type: 'object',
  required: ['name', 'hostname', 'subsets', 'createdAt', 'deadlineSeconds', 'idleTimeoutSeconds', 'status'],
  additionalProperties: false,
  properties: {
    name: {
      description: 'The view\'s name.',
      $ref: `${Route.$id}#/$defs/ViewName`,
    },
    hostname: {
      description: 'The host the view is served at: `<name>.<gateway hostname>`.',
      $ref: `${Route.$id}#/$defs/ViewHostname`,
    },
    subsets: {
      description: 'The parts of the data lake the view may access.',
      type: 'array',
      minItems: 1,
      maxItems: 16,
      items: { $ref: Subset.$id },
    },
    owner: {
      description: 'Who the view belongs to, when the request said.',
      $ref: `${ViewRequest.$id}#/$defs/Owner`,
    },
    sharedWith: {
      description: 'Who else may open the view.',
      $ref: `${ViewRequest.$id}#/$defs/Shares`,
    },
    createdAt: {
      description: 'When the view was created.',
      type: 'string',
      format: 'date-time',
    },
    deadlineSeconds: {
      description: 'The hard cap on one run of the workload in effect for this view (requested or the gateway\'s default).',
      $ref: `${ViewRequest.$id}#/$defs/DeadlineSeconds`,
    },
    idleTimeoutSeconds: {
      description: 'The idle timeout in effect for this view (requested or the gateway\'s default).',
      $ref: `${ViewRequest.$id}#/$defs/IdleTimeoutSeconds`,
    },
    status: {
      description: 'The view\'s workload as last observed.',
      $ref: '#/$defs/ViewStatus',
    },
  },
  examples: [
    {
      name: 'sales',
      hostname: 'sales.localhost',
      subsets: [{ bucket: 'lake', prefixes: ['sales/'] }],
      createdAt: '2025-10-01T08:00:00Z',
      deadlineSeconds: 3600,
      idleTimeoutSeconds: 900,
      status: { phase: 'cold', endpoints: [] },
    },
    {
      name: 'q3-2025',
      hostname: 'q3-2025.views.example.com',
      subsets: [
        {
          bucket: 'lake',
          prefixes: ['sales/2025/'],
          tables: { orders: { path: 'sales/2025/orders/*.parquet', format: 'parquet' } },
        },
      ],
      owner: 'ana@example.com',
      createdAt: '2025-10-01T08:00:00Z',
      deadlineSeconds: 28800,
      idleTimeoutSeconds: 900,
      status: {
        phase: 'ready',
        endpoints: [{ ip: '10.244.0.12', ready: true }],
        deadline: '2025-10-01T17:02:03Z',
        lastActivity: '2025-10-01T09:15:42.125Z',
        startedAt: '2025-10-01T09:02:03Z',
        maxDeadline: '2025-10-01T17:02:03Z',
        requests: { cpu: '250m', memory: '512Mi' },
      },
    },
    {
      name: 'team42',
      hostname: 'team42.localhost',
      subsets: [{ bucket: 'scratch', prefixes: ['teams/42/'], write: true }],
      createdAt: '2025-10-01T08:00:00Z',
      deadlineSeconds: 3600,
      idleTimeoutSeconds: 600,
      status: {
        phase: 'starting',
        message: 'Waiting for the workload to become ready',
        endpoints: [{ ip: 'fd00:10:244::c', ready: false }],
        deadline: '2025-10-01T10:00:00Z',
      },
    },
    {
      name: 'broken',
      hostname: 'broken.localhost',
      subsets: [{ bucket: 'lake', prefixes: ['sales/'] }],
      createdAt: '2025-10-01T08:00:00Z',
      deadlineSeconds: 3600,
      idleTimeoutSeconds: 900,
      status: {
        phase: 'failed',
        reason: 'ImagePullBackOff',
        message: 'Back-off pulling image "duckdb-view:1.0.0"',
        endpoints: [],
      },
    },
  ],
  $defs: {
    ViewStatus: {
      title: 'ViewStatus',
      description: 'The state of a view\'s workload.',
      type: 'object',
      required: ['phase', 'endpoints'],
      additionalProperties: false,
      properties: {
        phase: {
          description: 'Where the workload is in its life.',
          $ref: '#/$defs/ViewPhase',
        },
        reason: {
          description:
            'Why the view is in this phase, machine-readable and CamelCase like Kubernetes reasons ' +
            '(for example ImagePullBackOff, Unschedulable, DeadlineExceeded, Idle).',
          type: 'string',
        },
        message: {
          description: 'A human-readable explanation of the phase.',
          type: 'string',
        },
        endpoints: {
          description: 'The workload\'s pod addresses, ready or not; the gateway routes to ready ones only.',
          type: 'array',
          items: { $ref: '#/$defs/ViewEndpoint' },
        },
        deadline: {
          description: 'When the current run will be stopped however busy it is (its start plus the deadline); only while it runs.',
          type: 'string',
          format: 'date-time',
        },
        lastActivity: {
          description: 'When the gateway last saw a request for the view, if it has seen one since the view was created.',
          type: 'string',
          format: 'date-time',
        },
        startedAt: {
          description: 'When the current run started (its Job was created); only while it runs.',
          type: 'string',
          format: 'date-time',
        },
        maxDeadline: {
          description:
            'The latest the current run\'s deadline may be extended to: its start plus the operator\'s cap on one run ' +
            '(POST /_api/views/<name>/extend refuses to go past it); only while it runs.',
          type: 'string',
          format: 'date-time',
        },
        requests: {
          description: 'What the current run\'s pod asks the cluster for (its resource requests); only while it runs.',
          $ref: '#/$defs/ResourceRequests',
        },
      },
      examples: [{ phase: 'cold', endpoints: [] }],
    },
    ResourceRequests: {
      title: 'ResourceRequests',
      description: 'CPU and memory a pod requests, as Kubernetes quantities.',
      type: 'object',
      additionalProperties: false,
      properties: {
        cpu: { description: 'CPU, for example `250m` (a quarter of a core).', type: 'string', minLength: 1, maxLength: 64 },
        memory: { description: 'Memory, for example `512Mi`.', type: 'string', minLength: 1, maxLength: 64 },
      },
      examples: [{ cpu: '250m', memory: '512Mi' }],
    },
    ViewPhase: {
      title: 'ViewPhase',
      description:
        'cold: no workload runs (never started, or stopped when idle or past its deadline); ' +
        'starting: a workload was created and is not ready yet; ' +
        'ready: at least one endpoint is ready and requests are routed to it; ' +
        'failed: the last start cannot succeed (see reason and message); the next request starts again.',
      type: 'string',
      enum: ['cold', 'starting', 'ready', 'failed'],
      examples: ['ready'],
    },
    ViewEndpoint: {
      title: 'ViewEndpoint',
      description: 'One address of a view\'s workload.',
      type: 'object',
      required: ['ip', 'ready'],
      additionalProperties: false,
      properties: {
        ip: {
          description: 'The pod\'s IP address (IPv4 or IPv6).',
          type: 'string',
          anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }],
        },
        ready: {
          description: 'Whether the endpoint is ready (its readiness probe passes), so it receives requests.',
          type: 'boolean',
        },
      },
      examples: [{ ip: '10.244.0.12', ready: true }],
    },
  },
};

const base = {
  name: 'sales',
  hostname: 'sales.localhost',
  subsets: [{ bucket: 'lake', prefixes: ['sales/'] }],
  createdAt: '2025-10-01T08:00:00Z',
  deadlineSeconds: 3600,
  idleTimeoutSeconds: 900,
};

export const invalidExamples = [
  // status is required
  base,
  // unknown phase
  { ...base, status: { phase: 'running', endpoints: [] } },
  // endpoints are always listed, possibly empty
  { ...base, status: { phase: 'cold' } },
  // createdAt is an RFC 3339 date-time
  { ...base, createdAt: 'yesterday', status: { phase: 'cold', endpoints: [] } },
  // a date-time has a time zone
  { ...base, createdAt: '2025-10-01T08:00:00', status: { phase: 'cold', endpoints: [] } },
  // an endpoint ip is an IP address
  { ...base, status: { phase: 'ready', endpoints: [{ ip: 'pod-1', ready: true }] } },
  // an endpoint says whether it is ready
  { ...base, status: { phase: 'ready', endpoints: [{ ip: '10.244.0.12' }] } },
  // ready is a boolean
  { ...base, status: { phase: 'ready', endpoints: [{ ip: '10.244.0.12', ready: 'true' }] } },
  // deadline is a date-time
  { ...base, status: { phase: 'ready', endpoints: [], deadline: 3600 } },
  // reason is a string
  { ...base, status: { phase: 'failed', reason: 404, endpoints: [] } },
  // hostname must be a view hostname
  { ...base, hostname: 'localhost', status: { phase: 'cold', endpoints: [] } },
  // the effective deadline is always given
  (({ deadlineSeconds: _, ...rest }) => ({ ...rest, status: { phase: 'cold', endpoints: [] } }))(base),
  // no other properties
  { ...base, status: { phase: 'cold', endpoints: [], pods: 1 } },
  // requests are quantities as text
  { ...base, status: { phase: 'ready', endpoints: [], requests: { cpu: 0.25 } } },
  // startedAt is a date-time
  { ...base, status: { phase: 'ready', endpoints: [], startedAt: 'an hour ago' } },
];
