"""Operations on queues and the local endpoint: provision, redrive, IAM, local SQS, demo."""
