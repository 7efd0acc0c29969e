"""The three kinds of simulated gateway request (``llm``, ``agent``, ``routing``), each one
``Trace`` as Plano sends it; ``Builder`` makes them from a second's seeded generator."""

from __future__ import annotations

from dataclasses import replace

from .gateway import (
    ALIASES,
    DEFAULT_MODEL,
    FILTERS,
    INBOUND_USER_AGENTS,
    LISTENERS,
    MODELS,
    PROMPTS,
    ROUTES,
    TENANTS,
    TOOLS,
    USER_AGENTS,
)
from .llm_call import LlmCallBuilder
from .spans import (
    AGENT,
    AGENTS_CHAT,
    CHAT,
    INBOUND,
    LLM,
    MESSAGES,
    MS,
    RESPONSES,
    ROUTING,
    ROUTING_CHAT,
    UNKNOWN_MODELS,
    Trace,
    log_event,
    lognormal,
    pick,
    uuid,
)


class Builder(LlmCallBuilder):
    """Makes the traces of one second from that second's generator."""

    def _who(self) -> tuple[str | None, str | None]:
        rng = self.rng
        tenant = rng.choice(TENANTS) if rng.random() < 0.5 else None
        user = f"user_{rng.randint(1000, 1400)}" if rng.random() < 0.6 else None
        return tenant, user

    def llm_request(self, start_ns: int, second: int) -> Trace:
        """A direct request to the LLM listener, rooted at ``plano(llm)`` (Envoy does not trace
        that listener)."""
        rng, tr = self.rng, Trace(LLM)
        session = self._session(rng, second) if rng.random() < 0.8 else None
        prefs = rng.random() < 0.55
        r = rng.random()
        if r < 0.008:
            requested = rng.choice(UNKNOWN_MODELS)
        elif r < 0.12:
            requested = rng.choice(list(ALIASES))
        elif prefs:
            requested = DEFAULT_MODEL
        elif session and r < 0.75:
            requested = session.anchor  # a client keeps naming its conversation's model
        else:
            requested = pick(rng, {m.name: m.weight for m in MODELS.values()})
        model = MODELS.get(ALIASES.get(requested, requested))
        path = CHAT
        if model and model.provider == "anthropic" and rng.random() < 0.35:
            path = MESSAGES
        elif model and model.provider == "openai" and rng.random() < 0.05:
            path = RESPONSES
        tenant, user = self._who()
        if session:  # the client sends its user's header with every turn of a conversation, or never
            user = session.user
        prompt = rng.choice(PROMPTS)
        tools = tuple(rng.sample(TOOLS, rng.randint(1, 3))) if rng.random() < 0.15 else ()
        self.llm_call(
            tr,
            self._id(16),
            b"",
            start_ns,
            rid=uuid(rng),
            requested=requested,
            path=path,
            prefs=prefs,
            session=session,
            tools=tools,
            streaming=rng.random() < 0.7,
            prompt=prompt,
            turns=rng.randint(1, 14),
            tenant=tenant,
            user=user,
            ua=rng.choice(USER_AGENTS),
        )
        return tr

    def agent_request(self, start_ns: int, second: int) -> Trace:
        """A request to an agent listener: Envoy's ``plano(inbound)`` root, the orchestrator (named
        after the listener) with its agent-selection call, then per selected agent its filters and
        its ``plano(agent)`` span, under which the agent's LLM calls come back through Plano."""
        rng, tr = self.rng, Trace(AGENT)
        trace_id, rid = self._id(16), uuid(rng)
        inbound_id, orch_id = self._id(8), self._id(8)
        listener = pick(rng, {name: w for name, (w, _) in LISTENERS.items()})
        agents = LISTENERS[listener][1]
        tenant, _ = self._who()
        prompt = rng.choice(PROMPTS)
        orch_start = start_ns + int(rng.uniform(0.3, 1.5) * MS)
        o_attrs: list = [
            ("component", "orchestrator"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", AGENTS_CHAT),
            ("service.name.override", "plano(orchestrator)"),
        ]
        if tenant:
            o_attrs.append(("tenant.id", tenant))
        o_events: list = []
        sel_start = orch_start + int(lognormal(rng, 2.5, 0.5) * MS)
        sel_end, sel_status = self._arch_call(tr, trace_id, orch_id, rid, sel_start, 230, int(lognormal(rng, 700, 0.4)))
        cursor = sel_end + int(rng.uniform(0.3, 1.5) * MS)
        status, answered, response_bytes = 200, None, 0
        if sel_status != 200:
            status = 500
            o_events.append(
                log_event(
                    sel_end,
                    "agent selection failed",
                    "WARN",
                    "brightstaff::handlers::agents::selector",
                    77,
                    [("error", f"orchestrator model returned {sel_status}")],
                )
            )
        else:
            selected = rng.sample(list(agents), 2 if len(agents) > 1 and rng.random() < 0.15 else 1)
            o_attrs += [
                ("selection.listener", listener),
                ("selection.agent_count", len(selected)),
                ("selection.agents", ",".join(selected)),
                ("selection.determination_ms", f"{(cursor - sel_start) / MS + rng.uniform(0.5, 3):.2f}"),
            ]
            messages = rng.randint(1, 12)
            session = self._session(rng, second, implicit=True) if rng.random() < 0.6 else None
            for agent_id in selected:
                agent = agents[agent_id]
                blocked = None
                for f in agent.filters:
                    f_start = cursor + int(rng.uniform(0.2, 1.0) * MS)
                    cursor = f_start + int(lognormal(rng, 35, 0.5) * MS)
                    url, reject = FILTERS[f]
                    f_attrs = [
                        ("agent_id", f),
                        ("agent_url", url),
                        ("filter_name", f),
                        ("bytes_len", 260 + 180 * messages),
                        ("service.name.override", "plano(filter)"),
                    ]
                    self._span(
                        tr, "plano(filter)", trace_id, orch_id, f"execute_raw_filter ({f})", f_start, cursor, f_attrs
                    )
                    if rng.random() < reject:
                        blocked = f
                        break
                if blocked:
                    status, answered = 400, cursor
                    o_events.append(
                        log_event(
                            cursor,
                            "client error from agent",
                            "WARN",
                            "brightstaff::handlers::agents::orchestrator",
                            80,
                            [("agent", blocked), ("status", "400"), ("body", '{"error":"request blocked"}')],
                        )
                    )
                    break
                a_start, a_id = cursor + int(rng.uniform(0.3, 1.5) * MS), self._id(8)
                cursor = a_start + int(lognormal(rng, 12, 0.5) * MS)
                n_calls = pick(rng, ((1, 0.4), (2, 0.45), (3, 0.15)))
                model = pick(rng, agent.models)
                anchored = replace(session, anchor=model, route=None) if session else None
                failed = False
                for i in range(n_calls):
                    last = i == n_calls - 1
                    call = self.llm_call(
                        tr,
                        trace_id,
                        a_id,
                        cursor,
                        rid=rid,
                        requested=model,
                        session=anchored,
                        tools=agent.tools,
                        streaming=last and rng.random() < 0.8,
                        tool_turn=i > 0,
                        prompt=prompt,
                        turns=messages + 2 * i,
                        context=(1400, 0.6),
                        completion=(150, 0.7) if last else (45, 0.5),
                        tenant=tenant,
                        ua="AsyncOpenAI/Python 2.17.0",
                    )
                    cursor = call.end_ns
                    if call.failed:
                        failed, status, answered = True, 500, call.end_ns  # the agent gives up with a 500
                        break
                    if last:
                        answered, response_bytes = call.first_byte_ns, call.response_bytes
                    else:
                        cursor += int(lognormal(rng, 150, 0.8) * MS)  # the agent runs the tool
                cursor += int(lognormal(rng, 6, 0.5) * MS)
                a_attrs = [
                    ("agent_id", agent_id),
                    ("message_count", messages),
                    ("service.name.override", "plano(agent)"),
                ]
                if tenant:
                    a_attrs.append(("tenant.id", tenant))
                self._span(
                    tr, "plano(agent)", trace_id, orch_id, f"{agent_id} {CHAT}", a_start, cursor, a_attrs, span_id=a_id
                )
                messages += 1
                if failed:
                    break
        orch_end = cursor + int(rng.uniform(0.2, 1.5) * MS)
        self._span(
            tr,
            "plano(orchestrator)",
            trace_id,
            inbound_id,
            listener,
            orch_start,
            orch_end,
            o_attrs,
            span_id=orch_id,
            events=o_events,
        )
        end = orch_end + int(rng.uniform(0.1, 0.8) * MS)
        sizes = (rng.randint(120, 2400), response_bytes or rng.randint(90, 400))
        i_attrs = self._envoy(
            rid,
            "https://localhost" + CHAT,
            rng.choice(INBOUND_USER_AGENTS),
            "bright_staff",
            status,
            "-",
            sizes,
            "172.18.0.1",
        )
        self._span(tr, INBOUND, trace_id, b"", f"POST {CHAT}", start_ns, end, i_attrs, span_id=inbound_id)
        self._http(tr, "agent_chat", status, orch_start, answered or orch_end)
        return tr

    def routing_request(self, start_ns: int, second: int) -> Trace:
        """A request to ``/routing/v1/chat/completions``: Plano decides the model, the client calls it."""
        rng, tr = self.rng, Trace(ROUTING)
        trace_id, rid, span_id = self._id(16), uuid(rng), self._id(8)
        tenant, _ = self._who()
        attrs: list = [
            ("component", "routing"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", ROUTING_CHAT),
            ("service.name.override", "plano(routing)"),
        ]
        if tenant:
            attrs.append(("tenant.id", tenant))
        session = self._session(rng, second) if rng.random() < 0.7 else None
        cursor = start_ns + int(lognormal(rng, 0.5, 0.5) * MS)
        status, route, model, events = 200, None, "none", []
        call_start = cursor
        call_end, call_status = self._arch_call(
            tr, trace_id, span_id, rid, call_start, 170, int(lognormal(rng, 900, 0.5))
        )
        cursor = call_end + int(rng.uniform(0.1, 0.6) * MS)
        if call_status != 200:
            outcome, status, selected = "policy_error", 500, "unknown"
            events.append(
                log_event(
                    cursor,
                    "routing decision failed",
                    "WARN",
                    "brightstaff::handlers::routing_service",
                    355,
                    [("error", "Failed to determine route: upstream unavailable")],
                )
            )
        else:
            if rng.random() < 0.8:
                route = pick(rng, {r: w for r, (w, _) in ROUTES.items()})
                model = pick(rng, ROUTES[route][1])
            selected = model
            if session:
                model, route, s_attrs = self._session_router(tr, cursor, session, model, route)
                attrs += s_attrs
            outcome = "no_candidates" if model == "none" else "decision_served"
            events.append(
                log_event(
                    cursor,
                    "routing decision completed",
                    "INFO",
                    "brightstaff::handlers::routing_service",
                    333,
                    [
                        ("primary_model", model),
                        ("total_models", 1 if model == "none" else 2),
                        ("route", f'Some("{route}")' if route else "None"),
                        ("pinned", False),
                        ("switched", False),
                    ],
                )
            )
        self._fact(
            tr,
            call_end,
            "brightstaff_router_decisions_total",
            route="routing",
            selected_model=selected,
            fallback="false" if selected not in ("none", "unknown") else "true",
        )
        self._fact(
            tr, call_end, "brightstaff_router_decision_duration_seconds", (call_end - call_start) / 1e9, route="routing"
        )
        end = cursor + int(rng.uniform(0.1, 0.5) * MS)
        self._fact(tr, end, "brightstaff_routing_service_requests_total", outcome=outcome)
        self._span(
            tr,
            "plano(routing)",
            trace_id,
            b"",
            "routing_decision",
            start_ns,
            end,
            attrs,
            span_id=span_id,
            events=events,
        )
        self._http(tr, "routing_decision", status, start_ns, end)
        return tr
