"""Roles and the permission matrix: monotonic, capped by intersection, deny by default."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from z4j_domain.errors import InvalidInput
from z4j_domain.rbac import (
    PERMISSIONS,
    Grant,
    Membership,
    Permission,
    Role,
    at_least,
    is_allowed,
    parse_role,
    permissions_of,
)

ROLES = st.sampled_from(Role)
MAYBE_ROLES = st.one_of(st.none(), ROLES)
PERMISSION_VALUES = {permission.value for permission in Permission}
ROLE_VALUES = {role.value for role in Role}

#: Anything that is not a permission: other strings (near misses included), roles, other types.
NOT_PERMISSIONS: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=20).filter(lambda text: text not in PERMISSION_VALUES),
    st.sampled_from(sorted(PERMISSION_VALUES)).flatmap(
        lambda value: st.sampled_from(
            [value.upper(), f" {value}", f"{value}.", value.split(".")[0]]
        )
    ),
    ROLES,
    st.sampled_from(sorted(PERMISSION_VALUES)).map(str.encode),
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.sampled_from(Permission), max_size=2),
    st.frozensets(st.sampled_from(Permission), max_size=2),
    st.just(object()),
)

#: Anything that is not a role.
NOT_ROLES: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=20).filter(lambda text: text not in ROLE_VALUES),
    st.sampled_from(["Admin", "ADMIN", " admin", "admin ", "owner", "superuser", "root", ""]),
    st.sampled_from(Permission),
    st.sampled_from(sorted(ROLE_VALUES)).map(str.encode),
    st.none(),
    st.integers(),
    st.just(object()),
)

#: The matrix, written out: changing who may do what must change this table too.
EXPECTED_MATRIX: dict[Permission, set[Role]] = {
    Permission.READ_TASKS: {Role.VIEWER, Role.AUDITOR, Role.OPERATOR, Role.ADMIN},
    Permission.RETRY: {Role.OPERATOR, Role.ADMIN},
    Permission.CANCEL: {Role.OPERATOR, Role.ADMIN},
    Permission.BULK_ACTIONS: {Role.OPERATOR, Role.ADMIN},
    Permission.MANAGE_SCHEDULES: {Role.OPERATOR, Role.ADMIN},
    Permission.PURGE: {Role.ADMIN},
    Permission.MANAGE_AGENTS: {Role.ADMIN},
    Permission.MANAGE_MEMBERS: {Role.ADMIN},
    Permission.CHANGE_SETTINGS: {Role.ADMIN},
    Permission.READ_AUDIT: {Role.AUDITOR, Role.ADMIN},
}


def test_the_matrix_is_pinned() -> None:
    """Exactly these roles may do each permission; every permission and role is in the table."""
    assert set(EXPECTED_MATRIX) == set(Permission)
    assert set(PERMISSIONS) == set(Role)
    for permission, roles in EXPECTED_MATRIX.items():
        assert {role for role in Role if is_allowed(role, permission)} == roles, permission
        assert {role for role in Role if permission in PERMISSIONS[role]} == roles, permission


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        (role, permission, role in roles)
        for permission, roles in EXPECTED_MATRIX.items()
        for role in Role
    ],
)
def test_each_cell_of_the_matrix(role: Role, permission: Permission, allowed: bool) -> None:
    """One cell of the matrix, by role object and by the plain strings a request carries."""
    assert is_allowed(role, permission) is allowed
    assert is_allowed(role.value, permission.value) is allowed
    assert Grant(role=role).allows(permission) is allowed


def test_the_roles_order_as_documented() -> None:
    """viewer < operator < admin, viewer < auditor < admin; auditor and operator incomparable."""
    chains = [
        [Role.VIEWER, Role.OPERATOR, Role.ADMIN],
        [Role.VIEWER, Role.AUDITOR, Role.ADMIN],
    ]
    for chain in chains:
        for lower, higher in itertools.pairwise(chain):
            assert at_least(higher, lower)
            assert not at_least(lower, higher)
            assert permissions_of(lower) < permissions_of(higher)
    assert not at_least(Role.AUDITOR, Role.OPERATOR)
    assert not at_least(Role.OPERATOR, Role.AUDITOR)
    assert permissions_of(Role.ADMIN) == frozenset(Permission)
    assert permissions_of(Role.AUDITOR) == permissions_of(Role.VIEWER) | {Permission.READ_AUDIT}
    assert all(at_least(Role.ADMIN, role) and at_least(role, Role.VIEWER) for role in Role)


@given(role=ROLES, other=ROLES, permission=st.sampled_from(Permission))
def test_a_higher_role_never_has_fewer_permissions(
    role: Role, other: Role, permission: Permission
) -> None:
    """Whenever the order says a role is at least another, it may do all the other may."""
    if at_least(role, other) and is_allowed(other, permission):
        assert is_allowed(role, permission)
    assert at_least(role, other) == (permissions_of(other) <= permissions_of(role))


@given(a=ROLES, b=ROLES, c=ROLES)
def test_at_least_is_a_partial_order(a: Role, b: Role, c: Role) -> None:
    """Reflexive, antisymmetric and transitive."""
    assert at_least(a, a)
    if at_least(a, b) and at_least(b, a):
        assert a == b
    if at_least(a, b) and at_least(b, c):
        assert at_least(a, c)


@given(role=st.one_of(ROLES, NOT_ROLES), thing=NOT_PERMISSIONS)
def test_anything_that_is_not_a_permission_is_denied(role: Any, thing: Any) -> None:
    """Unknown actions (other strings, near misses, roles, bytes, objects): refused to all roles."""
    assert not is_allowed(role, thing)
    assert not Grant(role=role if isinstance(role, Role) else None, instance_admin=True).allows(
        thing
    )
    assert not Grant(role=Role.ADMIN).allows(thing)


@given(role=NOT_ROLES, permission=st.sampled_from(Permission))
def test_an_unknown_role_gets_nothing(role: Any, permission: Permission) -> None:
    """A value that is not a role (another release's, a typo, a permission) may do nothing."""
    assert permissions_of(role) == frozenset()
    assert not is_allowed(role, permission)
    assert not is_allowed(role, permission.value)
    grant = Grant(role=role)
    assert not grant.allows(permission)
    assert grant.permissions == frozenset()
    assert not grant.can_see
    assert grant.effective_role is None
    # As a cap, an unknown role leaves nothing allowed, even to an instance admin.
    capped = Grant(role=Role.ADMIN, instance_admin=True, cap=role if role is not None else "x")
    assert capped.permissions == frozenset()
    assert not capped.allows(permission)


@given(role=MAYBE_ROLES, instance_admin=st.booleans(), cap=MAYBE_ROLES)
def test_a_grant_is_the_intersection_of_the_users_role_and_the_cap(
    role: Role | None, instance_admin: bool, cap: Role | None
) -> None:
    """A capped key never allows more than its user's role, nor more than its cap."""
    grant = Grant(role=role, instance_admin=instance_admin, cap=cap)
    user = Role.ADMIN if instance_admin else role
    expected = permissions_of(user)
    if cap is not None:
        expected &= permissions_of(cap)
        assert grant.permissions <= permissions_of(cap)
    assert grant.permissions == expected
    assert grant.permissions <= permissions_of(user)
    assert grant.effective_role == user
    assert grant.can_see == (user is not None)
    for permission in Permission:
        assert grant.allows(permission) == (permission in expected)
        assert grant.allows(permission.value) == (permission in expected)


@given(role=MAYBE_ROLES, cap=MAYBE_ROLES)
def test_an_instance_admin_acts_as_admin_of_every_project(
    role: Role | None, cap: Role | None
) -> None:
    """Whatever their membership (or none), an instance admin has admin's permissions, capped."""
    grant = Grant(role=role, instance_admin=True, cap=cap)
    assert grant.can_see
    assert grant.effective_role is Role.ADMIN
    assert grant.permissions == (frozenset(Permission) if cap is None else permissions_of(cap))


@given(cap=MAYBE_ROLES, permission=st.one_of(st.sampled_from(Permission), NOT_PERMISSIONS))
def test_no_role_and_no_instance_admin_sees_nothing(cap: Role | None, permission: Any) -> None:
    """Neither a member nor an instance admin: cannot see the project or do anything in it."""
    grant = Grant(role=None, instance_admin=False, cap=cap)
    assert not grant.can_see
    assert grant.effective_role is None
    assert grant.permissions == frozenset()
    assert not grant.allows(permission)


@given(role=ROLES)
def test_parse_role_accepts_every_role_by_name(role: Role) -> None:
    """Each role's value parses to that role."""
    assert parse_role(role.value) is role
    assert parse_role(role) is role


@given(value=NOT_ROLES)
def test_parse_role_refuses_anything_else_naming_the_valid_roles(value: Any) -> None:
    """An unknown role is InvalidInput, and the message lists the valid ones."""
    with pytest.raises(InvalidInput) as raised:
        parse_role(value)
    message = str(raised.value)
    assert all(role.value in message for role in Role)


def test_a_membership_parses_its_role() -> None:
    """A membership's role is parsed from text; an unknown one is refused, as is a naive time."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    membership = Membership(project_id=1, user_id=2, role="operator", created_at=at)  # type: ignore[arg-type]
    assert membership.role is Role.OPERATOR
    with pytest.raises(InvalidInput, match="viewer"):
        Membership(project_id=1, user_id=2, role="owner", created_at=at)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        Membership(project_id=1, user_id=2, role=Role.ADMIN, created_at=datetime(2026, 1, 1))
