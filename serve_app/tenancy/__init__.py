"""Multi-tenant admission: tenants and their limits, weighted fair order, deadline-aware refusals.

Kept empty on purpose: each module is imported on its own, and only `limiter_actor` imports Ray.
"""
