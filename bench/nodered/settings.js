// Node-RED settings for the benchmark's peer (bench/nodered_peer.py starts it with --settings).
// Everything comes from the environment so that one file serves every run: the flow file and the
// port are the run's own. The editor stays on, as a park would run Node-RED, and listens on
// 127.0.0.1 only; no credentials are stored, so no credential secret is needed.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.BENCH_NODE_RED_PORT, 10),
    flowFile: process.env.BENCH_NODE_RED_FLOW,
    credentialSecret: false,
    flowFilePretty: false,
    // No update checks, no telemetry, no external palette look-ups during a run.
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false }, tours: false },
    logging: {
        // info: the broker node says "Connected to broker", which the bench waits for.
        console: { level: "info", metrics: false, audit: false },
    },
    functionExternalModules: false,
};
