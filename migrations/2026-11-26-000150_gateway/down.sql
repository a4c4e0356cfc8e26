DROP INDEX IF EXISTS deployments_status;
DROP INDEX IF EXISTS deployments_one_live;
