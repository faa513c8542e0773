"""The HTTP API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from taskapp.db import get_db
from taskapp.models import Task, User

app = FastAPI(title="taskapp")
Db = Annotated[Session, Depends(get_db)]


class UserIn(BaseModel):
    email: str
    name: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    name: str


class TaskIn(BaseModel):
    title: str


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    done: bool


class Stats(BaseModel):
    users: int
    tasks: int
    done: int


def _user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return user


@app.post("/users", status_code=201)
def create_user(body: UserIn, db: Db) -> UserOut:
    user = User(email=body.email, name=body.name)
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(409, f"{body.email} is already signed up") from None
    return UserOut.model_validate(user)


@app.get("/users")
def list_users(db: Db) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in db.scalars(select(User).order_by(User.id))]


@app.get("/users/{user_id}")
def get_user(user_id: int, db: Db) -> UserOut:
    return UserOut.model_validate(_user(db, user_id))


@app.post("/users/{user_id}/tasks", status_code=201)
def add_task(user_id: int, body: TaskIn, db: Db) -> TaskOut:
    task = Task(user=_user(db, user_id), title=body.title)
    db.add(task)
    db.commit()
    return TaskOut.model_validate(task)


@app.get("/users/{user_id}/tasks")
def list_tasks(user_id: int, db: Db) -> list[TaskOut]:
    return [TaskOut.model_validate(t) for t in _user(db, user_id).tasks]


@app.post("/tasks/{task_id}/done")
def complete_task(task_id: int, db: Db) -> TaskOut:
    task = db.get(Task, task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id}")
    task.done = True
    db.commit()
    return TaskOut.model_validate(task)


@app.get("/stats")
def stats(db: Db) -> Stats:
    users = db.scalar(select(func.count()).select_from(User)) or 0
    tasks = db.scalar(select(func.count()).select_from(Task)) or 0
    done = db.scalar(select(func.count()).select_from(Task).where(Task.done)) or 0
    return Stats(users=users, tasks=tasks, done=done)
