"""One ``plano(llm)`` call as brightstaff makes it (Plano 0.4.28+): the session router's
decision, the dispatch upstream through Envoy's outbound listener (or a failure before it),
the usage a provider reports, the signal analysis, and what brightstaff's ``/metrics`` records
of it. A direct LLM request is one such call; an agent's model calls are more."""

from __future__ import annotations

from dataclasses import dataclass

from .gateway import (
    ALIASES,
    MODELS,
    PROVIDERS,
    QUALITY,
    ROUTES,
    SIGNALS,
    Model,
)
from .spans import (
    CHAT,
    FLAG,
    INCLUDE_USAGE,
    MESSAGES,
    MS,
    SERVER_ERRORS,
    STREAM_ERROR_RATE,
    EnvoyCall,
    Session,
    SpanBuilder,
    Trace,
    log_event,
    lognormal,
    pick,
    preview,
    span_event,
)


@dataclass
class _Call:
    """How one plano(llm) request ended."""

    end_ns: int
    first_byte_ns: int
    status: int | None  # None: failed before dispatch
    response_bytes: int = 0

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 400


class LlmCallBuilder(SpanBuilder):
    """``SpanBuilder`` with ``llm_call``: one plano(llm) span and what hangs below and beside it."""

    def _session_router(self, tr: Trace, at_ns: int, session: Session, candidate: str, route: str | None):
        """Plano's session router: the binding lookup, warmth, the routing budget and the switch
        gate. Returns (model, route, span attributes)."""
        rng = self.rng
        hit = rng.random() < 0.8
        warm = hit and rng.random() < 0.85
        self._fact(tr, at_ns, "brightstaff_session_cache_events_total", outcome="hit" if hit else "miss")
        idle = (
            int(min(290_000, lognormal(rng, 40_000, 0.9))) if warm else (rng.randint(300_000, 3_000_000) if hit else 0)
        )
        switches = rng.randint(0, 3) if warm else 0
        baseline = round(rng.uniform(0.002, 0.06), 6) if warm else 0.0
        spend = round(baseline * rng.uniform(0, 0.15), 6)
        total = round(rng.uniform(0.001, 0.4), 6) if hit else 0.0
        attrs: list = [("plano.cache.warm", warm), ("plano.cache.idle_ms", idle)]
        attrs += [
            ("plano.session.overhead_pct", round(100 * spend / baseline, 3) if baseline else 0.0),
            ("plano.session.switch_spend_in_usd", spend),
            ("plano.session.baseline_in_usd", baseline),
            ("plano.session.switches", switches),
            ("plano.session.total_cost_in_usd", total),
        ]
        model = candidate
        if warm:
            if candidate == session.anchor:
                decision, reason = "allowed", "same_anchor"
            else:
                cost = round(rng.uniform(-0.003, 0.012), 6)
                ceiling = round(0.2 * baseline, 6)  # routing_budget.max_switch_spend_pct: 20
                if cost <= 0:
                    decision, reason = "allowed", "free"
                elif spend + cost <= ceiling:
                    decision, reason = "allowed", "within_cap"
                else:
                    decision, reason = "retained", "over_cap"
                warm_tokens = rng.choice((0, 0, rng.randint(500, 20_000)))
                attrs += [
                    ("plano.switch.cost_in_usd", cost),
                    ("plano.switch.candidate_warm_tokens", warm_tokens),
                    ("plano.switch.overhead_ceiling_in_usd", ceiling),
                    ("plano.switch.decision", decision),
                ]
                if decision == "retained":
                    attrs.append(
                        ("plano.switch.counterfactual_route", f"{candidate} ({route})" if route else candidate)
                    )
                    model, route = session.anchor, session.route
            self._fact(tr, at_ns, "brightstaff_session_switch_decisions_total", decision=decision, reason=reason)
        self._fact(tr, at_ns, "brightstaff_session_cache_events_total", outcome="store")
        return model, route, attrs

    # --- signals ------------------------------------------------------------------------------
    def _signals(self, turns: int, at_ns: int) -> tuple[list, list, bool]:
        """brightstaff's signal report: attributes, ``signal.*`` events, whether it is concerning."""
        rng = self.rng
        quality = pick(rng, [(q, w) for q, w, _ in QUALITY])
        lo, hi = next(r for q, _, r in QUALITY if q == quality)
        bad = quality in ("poor", "severe")
        chances = {  # group: chance of at least one instance
            "interaction.misalignment": 0.6 if bad else 0.08,
            "interaction.stagnation": 0.45 if bad else 0.04,
            "interaction.disengagement": (0.6 if quality == "severe" else 0.25) if bad else 0.005,
            "interaction.satisfaction": 0.02 if bad else (0.5 if quality in ("excellent", "good") else 0.1),
            "execution.failure": 0.3 if bad else 0.01,
            "execution.loops": 0.2 if bad else 0.005,
            "environment.exhaustion": 0.2 if bad else 0.01,
        }
        attrs: list = [
            ("signals.quality", quality),
            ("signals.quality_score", round(rng.uniform(lo, hi), 3)),
            ("signals.turn_count", turns),
            ("signals.efficiency_score", round(rng.uniform(0.3, 0.7) if bad else rng.uniform(0.6, 1.0), 3)),
        ]
        events, counts = [], {}
        for group, chance in chances.items():
            n = 0
            while rng.random() < (chance if n == 0 else 0.3) and n < 6:
                n += 1
            if not n:
                continue
            counts[group] = n
            attrs += [(f"signals.{group}.count", n), (f"signals.{group}.severity", (n + 1) // 2)]  # 1-2: 1, 3-6: 2-3
            for _ in range(n):
                kind, snippet = rng.choice(SIGNALS[group])
                ev = [("signal.type", kind), ("signal.message_index", rng.randrange(max(1, turns)))]
                ev += [("signal.confidence", round(rng.uniform(0.55, 0.98), 3)), ("signal.snippet", snippet)]
                events.append(span_event(at_ns, f"signal.{kind}", ev))
        concerning = (
            bad
            or counts.get("interaction.disengagement", 0) > 0
            or counts.get("interaction.stagnation", 0) > 2
            or counts.get("execution.failure", 0) > 0
            or counts.get("execution.loops", 0) > 0
        )
        return attrs, events, concerning

    # --- one plano(llm) request ---------------------------------------------------------------
    def llm_call(
        self,
        tr: Trace,
        trace_id: bytes,
        parent: bytes,
        start_ns: int,
        *,
        rid: str,
        requested: str,
        path: str = CHAT,
        prefs: bool = False,
        session: Session | None = None,
        tools: tuple[str, ...] = (),
        streaming: bool = True,
        tool_turn: bool = False,
        prompt: str = "",
        turns: int = 1,
        context: tuple[float, float] = (700, 1.0),
        completion: tuple[float, float] = (150, 0.75),
        tenant: str | None = None,
        user: str | None = None,
        ua: str = "OpenAI/Python 1.82.0",
    ) -> _Call:
        """One request to Plano's LLM listener (:12000): the ``plano(llm)`` span from
        ``start_ns`` and below it ``plano(routing)`` (with the router model's ``plano(outbound)``
        when preferences came with the request) and the upstream call's ``plano(outbound)``."""
        rng = self.rng
        span_id = self._id(8)
        attrs: list = [
            ("component", "llm"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", path),
            ("service.name.override", "plano(llm)"),
        ]
        if tenant:
            attrs.append(("tenant.id", tenant))
        if user:
            attrs.append(("plano.distinct_id", user))
        cursor = start_ns + int(lognormal(rng, 0.4, 0.5) * MS)

        # Phase 1: parse and validate. A model Plano does not know fails here.
        resolved = ALIASES.get(requested, requested)
        if resolved not in MODELS or rng.random() < 0.002:
            if resolved not in MODELS:
                warn = log_event(
                    cursor,
                    "model not found in configured providers",
                    "WARN",
                    "brightstaff::handlers::llm",
                    611,
                    [("model", resolved)],
                )
            else:
                warn = log_event(
                    cursor,
                    "failed to parse request JSON",
                    "WARN",
                    "brightstaff::handlers::llm",
                    593,
                    [("error", "EOF while parsing a value at line 1 column 2048")],
                )
            end = cursor + int(rng.uniform(0.1, 0.5) * MS)
            self._span(tr, "plano(llm)", trace_id, parent, "llm", start_ns, end, attrs, span_id=span_id, events=[warn])
            self._http(tr, "llm_chat", 400, start_ns, end)
            return _Call(end, end, None)
        temperature = rng.choice((None, None, "0", "0.1", "0.2", "0.7", "1"))
        if temperature is not None:
            attrs.append(("llm.temperature", temperature))
        if tools:
            attrs.append(("llm.tools", "\n".join(f"{t}(...)" for t in tools)))
        attrs.append(("llm.user_message_preview", preview(prompt)))
        if session:
            attrs.append(("plano.session_id", session.id))

        # Phase 3: routing (skipped on a tool-result turn of a session: the prior decision is replayed).
        candidate, route = resolved, None
        if tool_turn and session:
            attrs.append(("plano.routing.skipped", "not_user_turn"))
            self._fact(tr, cursor, "brightstaff_router_skips_total", reason="not_user_turn")
            cursor += int(rng.uniform(0.05, 0.3) * MS)
        else:
            r_start = cursor
            r_attrs = [
                ("component", "routing"),
                ("http.method", "POST"),
                ("http.target", path),
                ("model.requested", requested),
                ("model.alias_resolved", resolved),
                ("service.name.override", "plano(routing)"),
            ]
            r_id, r_events, failed = self._id(8), [], False
            if prefs:  # the router model ranks the request's preferences
                call_start = r_start + int(rng.uniform(0.3, 1.5) * MS)
                call_end, status = self._arch_call(
                    tr, trace_id, r_id, rid, call_start, 170, int(lognormal(rng, 900, 0.5))
                )
                r_end = call_end + int(rng.uniform(0.1, 0.8) * MS)
                if status != 200:
                    selected, failed = "unknown", True
                    r_events.append(
                        log_event(
                            call_end,
                            "upstream returned error response",
                            "WARN",
                            "brightstaff::router::http",
                            93,
                            [("status", status), ("message", "upstream unavailable"), ("body_size", 95)],
                        )
                    )
                elif rng.random() < 0.22:
                    selected = "none"  # no preference matched: the requested model stays
                else:
                    route = pick(rng, {r: w for r, (w, _) in ROUTES.items()})
                    selected = candidate = pick(rng, ROUTES[route][1])
            else:  # no preferences: nothing to rank
                r_end = r_start + int(rng.uniform(0.05, 0.4) * MS)
                selected = "none"
            took = r_end - r_start
            r_attrs += [("routing.determination_ms", took // MS), ("route.selected_model", selected)]
            self._span(
                tr,
                "plano(routing)",
                trace_id,
                span_id,
                "routing",
                r_start,
                r_end,
                r_attrs,
                span_id=r_id,
                events=r_events,
            )
            self._fact(
                tr,
                r_end,
                "brightstaff_router_decisions_total",
                route="llm",
                selected_model=selected,
                fallback="false" if selected not in ("none", "unknown") else "true",
            )
            self._fact(tr, r_end, "brightstaff_router_decision_duration_seconds", took / 1e9, route="llm")
            cursor = r_end + int(rng.uniform(0.05, 0.5) * MS)
            if failed:  # routing failed: answered 500 before dispatch
                end = cursor + int(rng.uniform(0.1, 0.4) * MS)
                self._span(tr, "plano(llm)", trace_id, parent, "llm", start_ns, end, attrs, span_id=span_id)
                self._http(tr, "llm_chat", 500, start_ns, end)
                return _Call(end, end, None)
        model = candidate
        if session:
            model, route, s_attrs = self._session_router(tr, cursor, session, candidate, route)
            attrs += s_attrs
            cursor += int(lognormal(rng, 0.3, 0.5) * MS)
        if route:
            attrs.append(("plano.route.name", route))
        m = MODELS[model]
        attrs += [("llm.model", model), ("llm.provider", m.provider)]
        name = f"POST {path} {requested}" if requested == model else f"POST {path} {requested} -> {model}"
        send_ns = cursor + int(lognormal(rng, 1.2, 0.5) * MS)
        return self._dispatch(
            tr,
            trace_id,
            parent,
            span_id,
            start_ns,
            send_ns,
            attrs,
            name,
            m,
            path,
            streaming,
            session,
            tools,
            turns,
            context,
            completion,
            rid,
            ua,
        )

    def _dispatch(
        self,
        tr,
        trace_id,
        parent,
        span_id,
        start_ns,
        send_ns,
        attrs,
        name,
        m: Model,
        path,
        streaming,
        session,
        tools,
        turns,
        context,
        completion,
        rid,
        ua,
    ) -> _Call:
        """Phase 4: the upstream call through Envoy's LLM listener, and the response side."""
        rng, cond = self.rng, self.cond
        up = PROVIDERS[m.provider]
        prompt_tokens = int(min(120_000, lognormal(rng, *context))) + 12 + 40 * len(tools)
        input_tokens = int(prompt_tokens * rng.uniform(0.88, 0.98))  # the filter counts message text only
        env_start = send_ns + int(rng.uniform(0.2, 1.0) * MS)
        r = rng.random()
        limited = r < cond.limited(m.name)
        server_error = not limited and r < cond.limited(m.name) + cond.failing(m.provider)
        reset, share = False, 1.0
        flags, completion_tokens = "-", 0
        if limited:  # Plano's WASM filter answers itself: no upstream
            status, flags = 429, "RL"
            env_end = env_start + int(lognormal(rng, 3, 0.4) * MS)
            first = env_end + int(rng.uniform(0.1, 0.6) * MS)
            end = first + int(rng.uniform(0.05, 0.3) * MS)
            body = rng.randint(150, 220)
        elif server_error:
            errors = SERVER_ERRORS.get(m.provider, SERVER_ERRORS["default"])
            status, flags, median, _ = rng.choices(errors, [e[3] for e in errors])[0]
            env_end = env_start + int(lognormal(rng, median, 0.7) * MS)
            first = env_end + int(rng.uniform(0.1, 0.6) * MS)
            end = first + int(rng.uniform(0.05, 0.3) * MS)
            body = rng.randint(90, 400)
        else:
            status = 200
            slow = cond.slow(m.provider)
            ttft = lognormal(rng, m.ttft_ms * slow, m.sigma)
            if rng.random() < 0.01:  # queued at the provider
                ttft = min(12_000.0, ttft * rng.uniform(2, 4))
            completion_tokens = int(min(4096, lognormal(rng, *completion))) + 1
            gen_ms = completion_tokens / (m.tokens_per_s / slow * lognormal(rng, 1, 0.2)) * 1000
            if streaming and rng.random() < STREAM_ERROR_RATE * (8 if cond.failing(m.provider) > 0.1 else 1):
                reset, flags, share = True, "UR", rng.uniform(0.1, 0.8)
                gen_ms *= share
            if streaming:
                first = env_start + int(ttft * MS)
                env_end = first + int(gen_ms * MS)
                end = env_end + int(rng.uniform(0.2, 1.5) * MS)
                body = int(completion_tokens * rng.uniform(80, 100) * share) + 400
            else:
                env_end = env_start + int((ttft + gen_ms) * MS)
                first = env_end + int(rng.uniform(0.1, 0.6) * MS)
                end = first + int(rng.uniform(0.05, 0.5) * MS)
                body = completion_tokens * 4 + rng.randint(450, 700)
        request_size = prompt_tokens * 4 + rng.randint(200, 900)
        self._outbound(tr, trace_id, span_id, rid, up, ua, env_start, env_end, status, flags, (request_size, body))
        span_end = end + int(rng.uniform(0.1, 0.8) * MS)

        # What brightstaff records once the response is in (ObservableStreamProcessor.on_complete).
        attrs += [("http.status_code", status), ("service.name.override", "plano(llm)")]
        ttft_ms, duration_ms = (first - send_ns) // MS, (end - send_ns) // MS
        attrs += [("llm.time_to_first_token", ttft_ms), ("llm.duration_ms", duration_ms), ("llm.response_bytes", body)]
        usage = self._usage(status, reset, streaming, path, m, session, prompt_tokens, completion_tokens)
        attrs += usage
        if status == 200 and session:  # priced only with a session and the catalog's rates
            u = dict(usage)
            cached = u.get("llm.usage.cached_input_tokens", 0)
            prompt = u.get("llm.usage.prompt_tokens", 0)
            cost_in = round(((prompt - cached) * m.input_usd_per_m + cached * m.cached_usd_per_m) / 1e6, 9)
            cost_out = round(u.get("llm.usage.completion_tokens", 0) * m.output_usd_per_m / 1e6, 9)
            attrs += [
                ("llm.usage.input_cost_usd", cost_in),
                ("llm.usage.output_cost_usd", cost_out),
                ("llm.usage.total_cost_usd", round(cost_in + cost_out, 9)),
            ]
        s_attrs, s_events, concerning = self._signals(turns, end)
        attrs += s_attrs
        events = [span_event(end, "llm.time_to_first_token", [("llm.time_to_first_token", ttft_ms)])]
        if reset:
            events.insert(
                0,
                log_event(
                    end,
                    "stream error",
                    "WARN",
                    "brightstaff::streaming",
                    578,
                    [
                        ("service", "plano(llm)"),
                        ("error", "Error receiving chunk: connection reset"),
                        ("duration_ms", duration_ms),
                    ],
                ),
            )
        events += s_events
        events.append(
            log_event(
                end,
                "streaming completed",
                "INFO",
                "brightstaff::streaming",
                556,
                [
                    ("service", "plano(llm)"),
                    ("total_bytes", body),
                    ("chunk_count", max(1, body // 90) if streaming else 1),
                    ("duration_ms", duration_ms),
                    ("time_to_first_token_ms", f"Some({ttft_ms})"),
                ],
            )
        )
        self._span(
            tr,
            "plano(llm)",
            trace_id,
            parent,
            name + (FLAG if concerning else ""),
            start_ns,
            span_end,
            attrs,
            span_id=span_id,
            events=events,
        )
        self._llm_facts(tr, m, status, reset, send_ns, first, end, dict(usage), session)
        answered = first if streaming or status != 200 else end
        self._http(tr, "llm_chat", status, start_ns, answered)
        output = (
            0 if status != 200 else (int(completion_tokens * rng.uniform(0.8, 1.2)) if streaming else completion_tokens)
        )
        tr.calls.append(
            EnvoyCall(
                env_start,
                env_end,
                up.cluster,
                status,
                rate_limited=limited,
                streaming=streaming,
                ttft_ms=(first - env_start) // MS if streaming and status == 200 else None,
                input_tokens=input_tokens,
                output_tokens=max(1, output) if status == 200 else 0,
                completed=not reset,
            )
        )
        return _Call(span_end, first, status, body)

    def _usage(self, status, reset, streaming, path, m: Model, session, prompt, completion) -> list:
        """The usage block brightstaff finds in the response, as span attributes (none on errors,
        a reset stream, or an OpenAI-style stream without ``include_usage``); the upstream's model
        comes with it except in an Anthropic-style stream."""
        rng = self.rng
        if status != 200 or reset or (streaming and path == CHAT and rng.random() >= INCLUDE_USAGE):
            return []
        out = [
            ("llm.usage.prompt_tokens", prompt),
            ("llm.usage.completion_tokens", completion),
            ("llm.usage.total_tokens", prompt + completion),
        ]
        warm = session is not None and rng.random() < 0.6
        cached = int(prompt * rng.uniform(0.4, 0.9)) if warm and prompt >= 1024 else 0
        if m.provider == "openai" or cached:
            out.append(("llm.usage.cached_input_tokens", cached))
        if m.provider == "anthropic" and not cached and session is not None and prompt >= 1024 and rng.random() < 0.5:
            out.append(("llm.usage.cache_creation_tokens", int(prompt * rng.uniform(0.6, 0.95))))
        if m.provider == "openai":
            out.append(("llm.usage.reasoning_tokens", int(completion * rng.uniform(0.3, 0.8)) if m.reasoning else 0))
        if not (streaming and path == MESSAGES):
            out.append(("llm.model", m.reported))
        return out

    def _llm_facts(self, tr, m: Model, status, reset, send_ns, first_ns, end_ns, usage: dict, session) -> None:
        """brightstaff_llm_* for one upstream call: TTFT at the first byte, the rest at its end."""
        p, mod = m.provider, m.short
        self._fact(
            tr,
            first_ns,
            "brightstaff_llm_time_to_first_token_seconds",
            (first_ns - send_ns) / 1e9,
            provider=p,
            model=mod,
        )
        self._fact(
            tr,
            end_ns,
            "brightstaff_llm_upstream_requests_total",
            provider=p,
            model=mod,
            status_class=f"{status // 100}xx",
            error_class="stream" if reset else "none",
        )
        self._fact(
            tr, end_ns, "brightstaff_llm_upstream_duration_seconds", (end_ns - send_ns) / 1e9, provider=p, model=mod
        )
        kinds = (
            ("prompt", "llm.usage.prompt_tokens"),
            ("completion", "llm.usage.completion_tokens"),
            ("cache_read", "llm.usage.cached_input_tokens"),
            ("cache_write", "llm.usage.cache_creation_tokens"),
        )
        for kind, key in kinds:
            if key in usage:
                self._fact(tr, end_ns, "brightstaff_llm_tokens_total", usage[key], provider=p, model=mod, kind=kind)
        if "llm.usage.prompt_tokens" in usage:
            hit = (
                usage.get("llm.usage.cached_input_tokens", 0) > 0 or usage.get("llm.usage.cache_creation_tokens", 0) > 0
            )
            self._fact(
                tr,
                end_ns,
                "brightstaff_prompt_cache_requests_total",
                provider=p,
                model=mod,
                outcome="hit" if hit else "miss",
            )
        else:
            self._fact(tr, end_ns, "brightstaff_llm_tokens_usage_missing_total", provider=p, model=mod)
        if status == 200 and session:  # the response refreshes the session's binding
            self._fact(tr, end_ns, "brightstaff_session_binding_events_total", event="refresh")
            self._fact(tr, end_ns, "brightstaff_session_cache_events_total", outcome="store")
